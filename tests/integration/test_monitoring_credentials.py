"""Monitoring logs in with its own roles, and reads their passwords from files.

On the running stack: postgres_exporter's connection belongs to the
monitoring role (pg_monitor, not the database's owner, not a superuser), the
owner no longer holds pg_monitor, and no process of the stack has a
monitoring password on its command line (what `ps` shows) while the
exporters have none in their environment either: each reads a 0600 file
(postgres_exporter's DATA_SOURCE_PASS_FILE, the PgBouncer exporter's PGPASSFILE).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import httpx
import psutil
import psycopg2

from tests.stackctl import RunningStack

EXPORTERS = ("postgres_exporter", "pgbouncer_exporter")


def test_postgres_exporter_uses_its_own_pg_monitor_role(stack: RunningStack) -> None:
    monitor, owner = stack.env["POSTGRES_MONITOR_USER"], stack.env["SLUICE_DB_USER"]
    assert monitor != owner
    metrics = httpx.get(stack.env["SLUICE_POSTGRES_EXPORTER_URL"], timeout=10).text
    assert "\npg_up 1" in metrics, "postgres_exporter cannot log in as its role"
    conn = psycopg2.connect(stack.database_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            deadline = time.monotonic() + 30
            users: list[str] = []
            while not users and time.monotonic() < deadline:
                cur.execute(
                    "SELECT usename FROM pg_stat_activity WHERE application_name = %s",
                    ("postgres_exporter",),
                )
                users = [row[0] for row in cur.fetchall()]
                time.sleep(0.5)
            assert users and set(users) == {monitor}, users
            cur.execute(
                "SELECT rolsuper, pg_has_role(rolname, 'pg_monitor', 'MEMBER'),"
                " pg_has_role(rolname, %s, 'MEMBER')"
                " FROM pg_roles WHERE rolname = %s",
                (owner, monitor),
            )
            assert cur.fetchone() == (False, True, False), "monitor: superuser/pg_monitor/owner"
            cur.execute(
                "SELECT pg_get_userbyid(datdba), pg_has_role(%s, 'pg_monitor', 'MEMBER')"
                " FROM pg_database WHERE datname = %s",
                (owner, stack.env["SLUICE_DB_NAME"]),
            )
            assert cur.fetchone() == (owner, False), "the owner should not hold pg_monitor"
    finally:
        conn.close()


def test_no_monitoring_password_on_a_command_line_or_in_an_exporters_environment(
    stack: RunningStack,
) -> None:
    passwords = {
        stack.environment["PGBOUNCER_STATS_PASSWORD"],
        stack.environment["POSTGRES_MONITOR_PASSWORD"],
    }
    for name, pid in stack.pids.items():
        top = psutil.Process(pid)
        for proc in [top, *top.children(recursive=True)]:
            try:
                cmdline = " ".join(proc.cmdline())
            except psutil.NoSuchProcess:
                continue  # a short-lived child (a PostgreSQL backend) already gone
            leaked = [p for p in passwords if p in cmdline]
            assert not leaked, f"{name} (pid {proc.pid}) has a password on its command line"
    for name in EXPORTERS:
        environ = psutil.Process(stack.pid(name)).environ()
        leaked = [k for k, v in environ.items() if any(p in v for p in passwords)]
        assert not leaked, f"{name} has a password in its environment: {leaked}"
        assert not {"PGPASSWORD", "DATA_SOURCE_PASS"} & set(environ), name
        password_file = Path(environ.get("PGPASSFILE") or environ["DATA_SOURCE_PASS_FILE"])
        mode = stat.S_IMODE(password_file.stat().st_mode)
        assert mode == 0o600, f"{password_file}: {mode:o}"
        assert password_file.stat().st_uid == os.geteuid()
