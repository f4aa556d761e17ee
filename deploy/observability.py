"""Exporters and Prometheus for the local stack.

`environment()` adds the PROMETHEUS_* variables that deploy/prometheus/*.template
read (scrape targets, intervals, rules directory) to the stack's environment
before the templates are rendered; compose sets the same variables to its
service names. `executors()` builds the processes, in start order: the
exporters (each behind its own readiness check), then Prometheus, whose
readiness check is `/-/ready` (config and rules loaded).

The exporters are the Debian packages of the exporters the compose file runs
as images, plus mtail, which turns nginx's JSON access log into counters of
the requests nginx itself refused (stub_status has no per-status counts).
PgBouncer's is the exception: deploy/pgbouncer_exporter.py says why.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any

from mirakuru import HTTPExecutor

from deploy.binaries import binary
from deploy.layout import ROOT, Layout

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
MTAIL_PROGS = PROMETHEUS_DIR / "mtail"

# Keys of stack.env that `make up` / `make status` print, besides the launcher's own.
URL_KEYS = (
    "SLUICE_NGINX_EXPORTER_URL",
    "SLUICE_NGINX_LOG_EXPORTER_URL",
    "SLUICE_PGBOUNCER_EXPORTER_URL",
    "SLUICE_POSTGRES_EXPORTER_URL",
)


def environment(layout: Layout, env: Mapping[str, str]) -> dict[str, str]:
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


def executors(
    layout: Layout, env: Mapping[str, str], *, log: Callable[[str], IO[str]], timeout_s: float
) -> list[tuple[str, HTTPExecutor]]:
    """(name, executor) of the exporters and Prometheus, in start order; none started.

    Each waits up to `timeout_s` for its readiness check.
    """
    p = layout.ports
    user, db = env["SLUICE_DB_USER"], env["SLUICE_DB_NAME"]

    def http(name: str, argv: list[str], **extra: Any) -> tuple[str, HTTPExecutor]:
        return name, HTTPExecutor(
            argv,
            url=layout.url(name, "/-/ready" if name == "prometheus" else "/metrics"),
            method="GET",
            timeout=timeout_s,
            stop_signal=signal.SIGTERM,
            stdout=log(name),
            stderr=subprocess.STDOUT,
            **extra,
        )

    # The monitoring role (pg_monitor) over the loopback listener; the
    # password is there for clusters that do not trust loopback.
    dsn = (
        f"postgresql://{user}@127.0.0.1:{p['postgres']}/{db}"
        f"?sslmode=disable&application_name=postgres_exporter"
    )
    stats_dsn = f"postgresql://{env['PGBOUNCER_STATS_USER']}@127.0.0.1:{p['pgbouncer']}/pgbouncer"
    return [
        http(
            "postgres_exporter",
            [
                binary("prometheus-postgres-exporter"),
                f"--web.listen-address=127.0.0.1:{p['postgres_exporter']}",
                "--log.level=warn",
            ],
            envvars={
                "DATA_SOURCE_NAME": dsn,
                "PGPASSWORD": env["SLUICE_DB_PASSWORD"],
                "PATH": env.get("PATH", "/usr/bin:/bin"),
            },
        ),
        http(
            "pgbouncer_exporter",
            [
                sys.executable,
                "-m",
                "deploy.pgbouncer_exporter",
                f"--listen=127.0.0.1:{p['pgbouncer_exporter']}",
                f"--dsn={stats_dsn}",
            ],
            cwd=str(ROOT),
            envvars={"PGPASSWORD": env["PGBOUNCER_STATS_PASSWORD"]},
        ),
        http(
            "nginx_exporter",
            [
                binary("prometheus-nginx-exporter"),
                f"-nginx.scrape-uri={layout.url('nginx_status', '/stub_status')}",
                f"-web.listen-address=127.0.0.1:{p['nginx_exporter']}",
            ],
        ),
        http(
            "nginx_log_exporter",
            [
                binary("mtail"),
                f"--progs={MTAIL_PROGS}",
                f"--logs={layout.logs / 'access.log'}",
                "--address=127.0.0.1",
                f"--port={p['nginx_log_exporter']}",
                # Counters keep the app's names and labels (sluice_shed_total{layer, reason}).
                "--emit_prog_label=false",
                "--logtostderr",
            ],
        ),
        http(
            "prometheus",
            [
                binary("prometheus"),
                f"--config.file={layout.rendered / 'prometheus' / 'prometheus.yml'}",
                f"--storage.tsdb.path={layout.state / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{p['prometheus']}",
                "--storage.tsdb.retention.time=2d",
                "--log.level=warn",
            ],
        ),
    ]
