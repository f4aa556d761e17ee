"""Statements per request, from PgBouncer's own statistics (issue 21).

PgBouncer counts every query and transaction it pools, per database
(`SHOW STATS`: `total_query_count`, `total_xact_count`), and its console
answers the stats-only user (PGBOUNCER_STATS_USER; the local stack trusts
loopback, so no password). It folds its live counters into those totals only
every `stats_period` (15 s in deploy/pgbouncer/pgbouncer.ini.template), so a
reading is taken once a whole period has passed since the last request:
`settled_totals` waits for that, and `SHOW CONFIG` says how long it is.

The arithmetic is pure: `count` turns two readings and the requests answered
in between into statements per request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg2

# A reading waits this much past one stats period after the last request.
_PERIOD_MARGIN_S = 1.5


@dataclass(frozen=True)
class Totals:
    queries: int
    transactions: int


@dataclass(frozen=True)
class StatementCount:
    """One request kind measured alone: how many statements PgBouncer passed for it."""

    kind: str  # "read" | "create"
    requests: int  # sent
    ok: int  # answered 2xx: the divisor (a refused request sends no statement)
    queries: int  # total_query_count gained
    transactions: int  # total_xact_count gained

    @property
    def per_request(self) -> float:
        return self.queries / self.ok if self.ok else 0.0

    @property
    def transactions_per_request(self) -> float:
        return self.transactions / self.ok if self.ok else 0.0


def count(kind: str, *, before: Totals, after: Totals, requests: int, ok: int) -> StatementCount:
    """What the counters gained while `requests` of one kind were sent. Pure."""
    if after.queries < before.queries or after.transactions < before.transactions:
        raise ValueError(f"PgBouncer's counters went down ({before} -> {after}): restarted?")
    return StatementCount(
        kind=kind,
        requests=requests,
        ok=ok,
        queries=after.queries - before.queries,
        transactions=after.transactions - before.transactions,
    )


def stats_dsn(env: Mapping[str, str]) -> str:
    """PgBouncer's console as the stats user, from a stack's published environment."""
    return (
        f"postgresql://{env['PGBOUNCER_STATS_USER']}@127.0.0.1:"
        f"{env['PGBOUNCER_LISTEN_PORT']}/pgbouncer"
    )


def _rows(dsn: str, query: str) -> list[dict[str, Any]]:
    conn = psycopg2.connect(dsn, connect_timeout=5)
    try:
        conn.autocommit = True  # the console has no transactions
        with conn.cursor() as cur:
            cur.execute(query)
            names = [column.name for column in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def totals(dsn: str, *, database: str) -> Totals:
    """`SHOW STATS` totals of one database, as PgBouncer last refreshed them."""
    for row in _rows(dsn, "SHOW STATS"):
        if row["database"] == database:
            return Totals(int(row["total_query_count"]), int(row["total_xact_count"]))
    raise LookupError(f"PgBouncer has no statistics for database {database!r}")


def stats_period_s(dsn: str) -> float:
    config = {row["key"]: row["value"] for row in _rows(dsn, "SHOW CONFIG")}
    return float(config["stats_period"])


def settled_totals(dsn: str, *, database: str, since: float, period_s: float) -> Totals:
    """The totals once a whole refresh period has passed since `since` (time.monotonic())."""
    wait = since + period_s + _PERIOD_MARGIN_S - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    return totals(dsn, database=database)
