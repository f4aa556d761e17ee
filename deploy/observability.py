"""Exporters and Prometheus for the local stack.

`environment()` adds the PROMETHEUS_* variables that deploy/prometheus/*.template
read (scrape targets, intervals, rules directory) to the stack's environment
before the launcher renders the templates; compose sets the same variables to
its service names. `executors()` yields the processes, in start order: the
exporters (each behind its own readiness check), then Prometheus, whose
readiness check is `/-/ready` (config and rules loaded).

The exporters are the Debian packages of the exporters the compose file runs
as images, plus mtail, which turns nginx's JSON access log into counters of
the requests nginx itself refused (stub_status has no per-status counts).

PgBouncer is the exception: Debian's prometheus-pgbouncer-exporter (1.7, a
different project from prometheus-community's) dies at start against
PgBouncer >= 1.8 (`KeyError: 'total_requests'`, a SHOW STATS column that was
renamed), and prometheus-community/pgbouncer_exporter is a Go program with no
Debian or PyPI package. `PgBouncerCollector` below is a stand-in that exports
the subset of prometheus-community's metric names the rules and dashboards
use, with the same labels, so both deployment shapes share one set of queries.

    python -m deploy.observability pgbouncer-exporter --listen 127.0.0.1:9127 \
        --dsn postgresql://sluice_stats@127.0.0.1:6432/pgbouncer

It connects as PgBouncer's stats-only user (PGBOUNCER_STATS_USER), never as
the app's role: the console lets it SHOW, not PAUSE or SHUTDOWN.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mirakuru import HTTPExecutor
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from deploy.stack import Layout, Supervisor

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
MTAIL_PROGS = PROMETHEUS_DIR / "mtail"
START_TIMEOUT_S = 60

# Keys of stack.env that `make up` / `make status` print, besides the launcher's own.
URL_KEYS = (
    "SLUICE_NGINX_EXPORTER_URL",
    "SLUICE_NGINX_LOG_EXPORTER_URL",
    "SLUICE_PGBOUNCER_EXPORTER_URL",
    "SLUICE_POSTGRES_EXPORTER_URL",
)


def environment(layout: Layout, env: dict[str, str]) -> dict[str, str]:
    """PROMETHEUS_* template variables for this stack; values already set win."""
    p = layout.ports
    interval = env.get("PROMETHEUS_SCRAPE_INTERVAL", "15s")
    defaults = {
        "PROMETHEUS_SCRAPE_INTERVAL": interval,
        # Prometheus refuses a timeout longer than the interval.
        "PROMETHEUS_SCRAPE_TIMEOUT": interval,
        "PROMETHEUS_EVALUATION_INTERVAL": interval,
        "PROMETHEUS_DEPLOYMENT": "local",
        "PROMETHEUS_RULES_DIR": str(PROMETHEUS_DIR / "rules"),
        "PROMETHEUS_APP_DISCOVERY": (
            f'static_configs: [{{targets: ["127.0.0.1:{p["metrics"]}"]}}]'
        ),
        "PROMETHEUS_TARGET_NGINX": f"127.0.0.1:{p['nginx_exporter']}",
        "PROMETHEUS_TARGET_NGINX_LOG": f"127.0.0.1:{p['nginx_log_exporter']}",
        "PROMETHEUS_TARGET_PGBOUNCER": f"127.0.0.1:{p['pgbouncer_exporter']}",
        "PROMETHEUS_TARGET_POSTGRES": f"127.0.0.1:{p['postgres_exporter']}",
        "PROMETHEUS_TARGET_PROMETHEUS": f"127.0.0.1:{p['prometheus']}",
    }
    values = {key: env.get(key, value) for key, value in defaults.items()}
    values.update(
        {
            "SLUICE_NGINX_EXPORTER_URL": layout.url("nginx_exporter", "/metrics"),
            "SLUICE_NGINX_LOG_EXPORTER_URL": layout.url("nginx_log_exporter", "/metrics"),
            "SLUICE_PGBOUNCER_EXPORTER_URL": layout.url("pgbouncer_exporter", "/metrics"),
            "SLUICE_POSTGRES_EXPORTER_URL": layout.url("postgres_exporter", "/metrics"),
        }
    )
    return values


def executors(supervisor: Supervisor) -> Iterator[tuple[str, Any]]:
    from deploy.stack import _binary

    layout, env = supervisor.layout, supervisor.env
    p = layout.ports
    user, db = env["SLUICE_DB_USER"], env["SLUICE_DB_NAME"]

    def http(name: str, argv: list[str], url: str, **extra: Any) -> tuple[str, Any]:
        return name, HTTPExecutor(
            argv,
            url=url,
            method="GET",
            timeout=START_TIMEOUT_S,
            stop_signal=signal.SIGTERM,
            stdout=supervisor.log(name),
            stderr=subprocess.STDOUT,
            **extra,
        )

    # The monitoring role (pg_monitor) over the loopback listener; the
    # password is there for clusters that do not trust loopback.
    dsn = (
        f"postgresql://{user}@127.0.0.1:{p['postgres']}/{db}"
        f"?sslmode=disable&application_name=postgres_exporter"
    )
    yield http(
        "postgres_exporter",
        [
            _binary("prometheus-postgres-exporter"),
            f"--web.listen-address=127.0.0.1:{p['postgres_exporter']}",
            "--log.level=warn",
        ],
        layout.url("postgres_exporter", "/metrics"),
        envvars={
            "DATA_SOURCE_NAME": dsn,
            "PGPASSWORD": env["SLUICE_DB_PASSWORD"],
            "PATH": env.get("PATH", "/usr/bin:/bin"),
        },
    )
    yield http(
        "pgbouncer_exporter",
        [
            sys.executable,
            "-m",
            "deploy.observability",
            "pgbouncer-exporter",
            f"--listen=127.0.0.1:{p['pgbouncer_exporter']}",
            f"--dsn=postgresql://{env['PGBOUNCER_STATS_USER']}@127.0.0.1:{p['pgbouncer']}/pgbouncer",
        ],
        layout.url("pgbouncer_exporter", "/metrics"),
        cwd=str(ROOT),
        envvars={"PGPASSWORD": env["PGBOUNCER_STATS_PASSWORD"]},
    )
    yield http(
        "nginx_exporter",
        [
            _binary("prometheus-nginx-exporter"),
            f"-nginx.scrape-uri={layout.url('nginx_status', '/stub_status')}",
            f"-web.listen-address=127.0.0.1:{p['nginx_exporter']}",
        ],
        layout.url("nginx_exporter", "/metrics"),
    )
    yield http(
        "nginx_log_exporter",
        [
            _binary("mtail"),
            f"--progs={MTAIL_PROGS}",
            f"--logs={layout.logs / 'access.log'}",
            "--address=127.0.0.1",
            f"--port={p['nginx_log_exporter']}",
            # Counters keep the names and labels the app uses (sluice_shed_total{layer, reason}).
            "--emit_prog_label=false",
            "--logtostderr",
        ],
        layout.url("nginx_log_exporter", "/metrics"),
    )
    yield http(
        "prometheus",
        [
            _binary("prometheus"),
            f"--config.file={layout.rendered / 'prometheus' / 'prometheus.yml'}",
            f"--storage.tsdb.path={layout.state / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{p['prometheus']}",
            "--storage.tsdb.retention.time=2d",
            "--log.level=warn",
        ],
        layout.url("prometheus", "/-/ready"),
    )


# --------------------------------------------------------------------------
# PgBouncer exporter stand-in (see the module docstring)

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


def _serve_pgbouncer_exporter(listen: str, dsn: str) -> int:
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
    parser = argparse.ArgumentParser(prog="python -m deploy.observability")
    sub = parser.add_subparsers(dest="command", required=True)
    exporter = sub.add_parser("pgbouncer-exporter", help="serve PgBouncer metrics")
    exporter.add_argument("--listen", required=True, help="host:port for /metrics")
    exporter.add_argument("--dsn", required=True, help="libpq URL of the pgbouncer admin db")
    args = parser.parse_args(argv)
    return _serve_pgbouncer_exporter(args.listen, args.dsn)


if __name__ == "__main__":
    raise SystemExit(main())
