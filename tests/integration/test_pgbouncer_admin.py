"""The app's user cannot administer PgBouncer; the exporter's stats user can only look."""

from __future__ import annotations

import psycopg2

from tests.pgbouncer_console import ADMIN_COMMANDS, refused_admin_commands, show_pools
from tests.stackctl import RunningStack


def test_the_app_user_is_refused_the_admin_console(stack: RunningStack) -> None:
    port = int(stack.env["PGBOUNCER_LISTEN_PORT"])
    app_user = stack.env["SLUICE_DB_USER"]
    refused = refused_admin_commands(port, app_user, "")
    assert set(refused) == set(ADMIN_COMMANDS), refused
    assert all("not allowed" in message for message in refused.values()), refused
    with psycopg2.connect(stack.env["SLUICE_PGBOUNCER_URL"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,), "PgBouncer stopped serving"
    conn.close()


def test_the_stats_user_can_show_but_not_pause(stack: RunningStack) -> None:
    port = int(stack.env["PGBOUNCER_LISTEN_PORT"])
    stats_user = stack.env["PGBOUNCER_STATS_USER"]
    assert stats_user != stack.env["SLUICE_DB_USER"]
    pools = show_pools(port, stats_user, "")
    assert any(row[0] == stack.env["SLUICE_DB_NAME"] for row in pools), pools
    refused = refused_admin_commands(port, stats_user, "")
    assert set(refused) == set(ADMIN_COMMANDS), refused
