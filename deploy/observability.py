"""Exporters, Prometheus and Alertmanager for the local stack.

`environment()` adds the PROMETHEUS_* and ALERTMANAGER_* variables that
deploy/prometheus/*.template and deploy/alertmanager/*.template read (scrape
targets, intervals, rules directory, where alerts go) to the stack's
environment before the templates are rendered; compose and Kubernetes set the
same variables to their own addresses. `render()` writes what is not a
template: the credential files the exporters read (no password on a command
line or in an environment), and the rules with `PROMETHEUS_ALERT_FOR`'s
shorter `for:` when a test sets it. `executors()` builds the processes, in
start order: the alert receiver and Alertmanager, the exporters (each behind
its own readiness check), then Prometheus, whose readiness check is
`/-/ready` (config and rules loaded). Prometheus also serves the dashboards:
the console templates grafana/generate.py writes from the same definitions as
the Grafana JSON, with the console libraries of Debian's prometheus package.

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
from pathlib import Path
from typing import IO, Any

import yaml
from mirakuru import HTTPExecutor

from deploy.binaries import binary
from deploy.errors import StackError
from deploy.layout import ROOT, Layout

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTMANAGER_DIR = ROOT / "deploy" / "alertmanager"
MTAIL_PROGS = PROMETHEUS_DIR / "mtail"
CONSOLES_DIR = ROOT / "grafana" / "consoles"
RUNBOOKS = ROOT / "docs" / "observability.md"
# Where Debian's prometheus package puts the console libraries (prom.lib):
# as examples in /usr/share/doc; some images keep a copy in /etc.
CONSOLE_LIBRARY_DIRS = (
    Path("/etc/prometheus/console_libraries"),
    Path("/usr/share/doc/prometheus/examples/console_libraries"),
    Path("/usr/share/prometheus/console_libraries"),
)

# Keys of stack.env that `make up` / `make status` print, besides the launcher's own.
URL_KEYS = (
    "SLUICE_DASHBOARDS_URL",
    "SLUICE_ALERTMANAGER_URL",
    "SLUICE_ALERTS_URL",
    "SLUICE_NGINX_EXPORTER_URL",
    "SLUICE_NGINX_LOG_EXPORTER_URL",
    "SLUICE_PGBOUNCER_EXPORTER_URL",
    "SLUICE_POSTGRES_EXPORTER_URL",
)


def environment(layout: Layout, env: Mapping[str, str]) -> dict[str, str]:
    """PROMETHEUS_* and ALERTMANAGER_* template variables; values already set win."""
    p = layout.ports
    interval = env.get("PROMETHEUS_SCRAPE_INTERVAL", "15s")
    overrides = env.get("PROMETHEUS_ALERT_FOR", "")
    rules = layout.rendered / "prometheus" / "rules" if overrides else PROMETHEUS_DIR / "rules"
    defaults = {
        "PROMETHEUS_SCRAPE_INTERVAL": interval,
        # Prometheus refuses a timeout longer than the interval.
        "PROMETHEUS_SCRAPE_TIMEOUT": interval,
        "PROMETHEUS_EVALUATION_INTERVAL": interval,
        "PROMETHEUS_DEPLOYMENT": "local",
        "PROMETHEUS_RULES_DIR": str(rules),
        # `AlertName=10s,...`: those alerts' `for:` in this stack's copy of the
        # rules (tests; the rules themselves stay as promtool tests them).
        "PROMETHEUS_ALERT_FOR": overrides,
        # The checkout's own runbooks: a URL that opens on the machine running the stack.
        "PROMETHEUS_RUNBOOK_URL": RUNBOOKS.as_uri(),
        "PROMETHEUS_TARGET_ALERTMANAGER": f"127.0.0.1:{p['alertmanager']}",
        "ALERTMANAGER_GROUP_WAIT": "30s",
        "ALERTMANAGER_GROUP_INTERVAL": "5m",
        "ALERTMANAGER_REPEAT_INTERVAL": "4h",
        "ALERTMANAGER_WEBHOOK_URL": layout.url("alert_receiver", "/"),
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
            "SLUICE_DASHBOARDS_URL": layout.url("prometheus", "/consoles/index.html"),
            "SLUICE_ALERTMANAGER_URL": layout.url("alertmanager"),
            # Every notification of the default route, one JSON line each.
            "SLUICE_ALERTS_URL": alerts_file(layout).as_uri(),
        }
    )
    return values


def alerts_file(layout: Layout) -> Path:
    return layout.state / "alerts.jsonl"


def console_libraries() -> Path:
    """The console libraries of Debian's prometheus package (prom.lib)."""
    for directory in CONSOLE_LIBRARY_DIRS:
        if (directory / "prom.lib").exists():
            return directory
    raise StackError(
        "Prometheus console libraries (prom.lib) not found in "
        f"{', '.join(map(str, CONSOLE_LIBRARY_DIRS))}: reinstall the prometheus package"
    )


def render(layout: Layout, env: Mapping[str, str]) -> None:
    """The rules with PROMETHEUS_ALERT_FOR's `for:` when it is set."""
    overrides = dict(
        item.split("=", 1) for item in env.get("PROMETHEUS_ALERT_FOR", "").split(",") if item
    )
    if not overrides:
        return
    target = Path(env["PROMETHEUS_RULES_DIR"])
    target.mkdir(parents=True, exist_ok=True)
    unknown = set(overrides)
    for source in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        rules = yaml.safe_load(source.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") in overrides:
                    rule["for"] = overrides[rule["alert"]]
                    unknown.discard(rule["alert"])
        (target / source.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    if unknown:
        raise StackError(f"PROMETHEUS_ALERT_FOR names no alert: {', '.join(sorted(unknown))}")


_READY_PATHS = {"prometheus": "/-/ready", "alertmanager": "/-/ready", "alert_receiver": "/-/ready"}


def executors(
    layout: Layout, env: Mapping[str, str], *, log: Callable[[str], IO[str]], timeout_s: float
) -> list[tuple[str, HTTPExecutor]]:
    """(name, executor) of the exporters and Prometheus, in start order; none started.

    Each waits up to `timeout_s` for its readiness check.
    """
    p = layout.ports
    db = env["SLUICE_DB_NAME"]

    def http(name: str, argv: list[str], **extra: Any) -> tuple[str, HTTPExecutor]:
        return name, HTTPExecutor(
            argv,
            url=layout.url(name, _READY_PATHS.get(name, "/metrics")),
            method="GET",
            timeout=timeout_s,
            stop_signal=signal.SIGTERM,
            stdout=log(name),
            stderr=subprocess.STDOUT,
            **extra,
        )

    # Each exporter logs in with its own role and reads the password from a
    # 0600 file rendered from deploy/<exporter>/ (postgres_exporter's
    # DATA_SOURCE_PASS_FILE, the PgBouncer exporter's PGPASSFILE), as in
    # compose and Kubernetes: none is on a command line or in an environment.
    # Loopback is trusted locally, but nothing here depends on that.
    uri = f"127.0.0.1:{p['postgres']}/{db}?sslmode=disable&application_name=postgres_exporter"
    stats_dsn = f"postgresql://{env['PGBOUNCER_STATS_USER']}@127.0.0.1:{p['pgbouncer']}/pgbouncer"
    alertmanager_config = layout.rendered / "alertmanager" / "alertmanager.yml"
    return [
        http(
            "alert_receiver",
            [
                sys.executable,
                str(ROOT / "deploy" / "alert_receiver.py"),
                f"--listen=127.0.0.1:{p['alert_receiver']}",
                f"--file={alerts_file(layout)}",
            ],
        ),
        http(
            "alertmanager",
            [
                binary("prometheus-alertmanager"),
                f"--config.file={alertmanager_config}",
                f"--storage.path={layout.state / 'alertmanager'}",
                f"--web.listen-address=127.0.0.1:{p['alertmanager']}",
                # One Alertmanager per stack: no gossip port (0.0.0.0:9094 by
                # default, which a second stack could not bind).
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
        ),
        http(
            "postgres_exporter",
            [
                binary("prometheus-postgres-exporter"),
                f"--web.listen-address=127.0.0.1:{p['postgres_exporter']}",
                "--log.level=warn",
            ],
            envvars={
                "DATA_SOURCE_URI": uri,
                "DATA_SOURCE_USER_FILE": str(layout.rendered / "postgres-exporter" / "user"),
                "DATA_SOURCE_PASS_FILE": str(layout.rendered / "postgres-exporter" / "password"),
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
            envvars={
                "PGPASSFILE": str(layout.rendered / "pgbouncer-exporter" / "pgpass"),
                "PATH": env.get("PATH", "/usr/bin:/bin"),
            },
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
                # The dashboards, as console templates (grafana/generate.py).
                f"--web.console.templates={CONSOLES_DIR}",
                f"--web.console.libraries={console_libraries()}",
                "--storage.tsdb.retention.time=2d",
                "--log.level=warn",
            ],
        ),
    ]
