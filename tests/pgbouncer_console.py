"""PgBouncer's admin console, as an attacker or the exporter would use it."""

from __future__ import annotations

from typing import Any

import psycopg2

ADMIN_COMMANDS = ("PAUSE", "SHUTDOWN", "RELOAD", "DISABLE sluice", "KILL sluice")
# What PgBouncer says to a user outside admin_users/stats_users, and to a stats user.
REFUSALS = ("not allowed", "admin access needed")


def _console(port: int, user: str, password: str) -> Any:
    conn = psycopg2.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        password=password,
        dbname="pgbouncer",
        connect_timeout=5,
    )
    conn.autocommit = True  # the console has no transactions
    return conn


def refused_admin_commands(port: int, user: str, password: str) -> dict[str, str]:
    """Each admin command PgBouncer refused, with its message; one it ran (or that
    failed any other way, e.g. because a SHUTDOWN went through) is missing."""
    refused = {}
    for command in ADMIN_COMMANDS:
        try:
            conn = _console(port, user, password)
        except psycopg2.OperationalError as exc:
            if any(r in str(exc) for r in REFUSALS):
                refused[command] = str(exc).strip()  # not even let in
            continue
        try:
            with conn.cursor() as cur:
                cur.execute(command)
        except psycopg2.Error as exc:
            if any(r in str(exc) for r in REFUSALS):
                refused[command] = str(exc).strip()
        finally:
            conn.close()
    return refused


def show_pools(port: int, user: str, password: str) -> list[tuple[Any, ...]]:
    conn = _console(port, user, password)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW POOLS")
            return list(cur.fetchall())
    finally:
        conn.close()
