"""A stand-in PgBouncer exporter for the local stack.

Debian's prometheus-pgbouncer-exporter (1.7, a different project from
prometheus-community's) dies at start against PgBouncer >= 1.8
(`KeyError: 'total_requests'`, a SHOW STATS column that was renamed), and
prometheus-community/pgbouncer_exporter is a Go program with no Debian or
PyPI package. `PgBouncerCollector` exports the subset of prometheus-community's
metric names the rules and dashboards use, with the same labels, so both
deployment shapes share one set of queries.

    python -m deploy.pgbouncer_exporter --listen 127.0.0.1:9127 \
        --dsn postgresql://sluice_stats@127.0.0.1:6432/pgbouncer

It connects as PgBouncer's stats-only user (PGBOUNCER_STATS_USER), never as
the app's role: the console lets it SHOW, not PAUSE or SHUTDOWN.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# SHOW POOLS column -> (metric, help); labels database, user.
_POOL_GAUGES = {
    "cl_active": (
        "pgbouncer_pools_client_active_connections",
        "Client connections linked to a server connection.",
    ),
    "cl_waiting": (
        "pgbouncer_pools_client_waiting_connections",
        "Client connections waiting for a server connection.",
    ),
    "sv_active": (
        "pgbouncer_pools_server_active_connections",
        "Server connections linked to a client.",
    ),
    "sv_idle": (
        "pgbouncer_pools_server_idle_connections",
        "Server connections idle and ready for a client.",
    ),
}
# SHOW STATS column -> (metric, help, scale); label database.
_STATS_COUNTERS = {
    "total_query_count": ("pgbouncer_stats_queries_pooled", "Queries pooled by PgBouncer.", 1.0),
    "total_xact_count": (
        "pgbouncer_stats_sql_transactions_pooled",
        "Transactions pooled by PgBouncer.",
        1.0,
    ),
    "total_wait_time": (
        "pgbouncer_stats_client_wait_seconds",
        "Time clients spent waiting for a server connection.",
        1e-6,
    ),
}


class PgBouncerCollector(Collector):
    """Reads PgBouncer's admin console on every scrape; pgbouncer_up says if it could."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def collect(self) -> Iterator[Metric]:
        import psycopg2

        up = GaugeMetricFamily("pgbouncer_up", "1 if PgBouncer's admin console answered.")
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=2)
        except psycopg2.Error:
            up.add_metric([], 0)
            yield up
            return
        try:
            conn.autocommit = True  # the admin console has no transactions
            with conn.cursor() as cur:
                pools = _rows(cur, "SHOW POOLS")
                stats = _rows(cur, "SHOW STATS")
                databases = _rows(cur, "SHOW DATABASES")
                config = {row["key"]: row["value"] for row in _rows(cur, "SHOW CONFIG")}
        except psycopg2.Error:
            up.add_metric([], 0)
            yield up
            return
        finally:
            conn.close()
        up.add_metric([], 1)
        yield up
        pools = [row for row in pools if row["database"] != "pgbouncer"]
        for column, (name, doc) in _POOL_GAUGES.items():
            gauge = GaugeMetricFamily(name, doc, labels=["database", "user"])
            for row in pools:
                gauge.add_metric([row["database"], row["user"]], float(row[column]))
            yield gauge
        maxwait = GaugeMetricFamily(
            "pgbouncer_pools_client_maxwait_seconds",
            "How long the oldest waiting client has waited for a server connection.",
            labels=["database", "user"],
        )
        for row in pools:
            waited = float(row["maxwait"]) + float(row.get("maxwait_us", 0)) / 1e6
            maxwait.add_metric([row["database"], row["user"]], waited)
        yield maxwait
        for column, (name, doc, scale) in _STATS_COUNTERS.items():
            counter = CounterMetricFamily(name, doc, labels=["database"])
            for row in stats:
                if row["database"] != "pgbouncer":
                    counter.add_metric([row["database"]], float(row[column]) * scale)
            yield counter
        pool_size = GaugeMetricFamily(
            "pgbouncer_databases_pool_size",
            "Server connections PgBouncer keeps per user/database pair.",
            labels=["name", "database"],
        )
        for row in databases:
            if row["name"] != "pgbouncer":
                pool_size.add_metric([row["name"], row["database"]], float(row["pool_size"]))
        yield pool_size
        yield GaugeMetricFamily(
            "pgbouncer_config_max_client_connections",
            "PgBouncer max_client_conn.",
            value=float(config.get("max_client_conn", 0)),
        )


def _rows(cur: Any, query: str) -> list[dict[str, Any]]:
    cur.execute(query)
    names = [column.name for column in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _serve(listen: str, dsn: str) -> int:
    host, _, port = listen.rpartition(":")
    registry = CollectorRegistry()
    registry.register(PgBouncerCollector(dsn))
    start_http_server(int(port), addr=host, registry=registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.pgbouncer_exporter")
    parser.add_argument("--listen", required=True, help="host:port for /metrics")
    parser.add_argument("--dsn", required=True, help="libpq URL of the pgbouncer admin db")
    args = parser.parse_args(argv)
    return _serve(args.listen, args.dsn)


if __name__ == "__main__":
    raise SystemExit(main())
