"""Refuse a variable under a settings prefix that names nothing: it would be ignored.

Every name under a prefix of service/env_names.py (SLUICE_, NGINX_, PGBOUNCER_,
POSTGRES_) is either a setting or one of the names below, each listed
explicitly: a typo such as NGINX_MAX_CONN or a stray SLUICE_FOO_URL is
refused with the closest valid name, never silently ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from service.env_names import has_settings_prefix

# The local stack's launcher reads these (deploy/layout.py).
LAUNCHER = frozenset({"SLUICE_STATE_DIR", "SLUICE_PORT_BASE"})

# What the local stack's stack.env publishes beside the settings and template
# variables (deploy/stack.py: RunningStack.env); users source it into their
# shell. tests/integration/test_unknown_setting.py keeps this list exact.
STACK_SERVICES = (
    "postgres",
    "pgbouncer",
    "gunicorn",
    "nginx",
    "postgres_exporter",
    "pgbouncer_exporter",
    "nginx_exporter",
    "nginx_log_exporter",
    "prometheus",
    "alert_receiver",
    "alertmanager",
    "smtp",
)
PUBLISHED = frozenset(
    {
        "SLUICE_URL",
        "SLUICE_APP_URL",
        "SLUICE_METRICS_URL",
        "SLUICE_NGINX_STATUS_URL",
        "SLUICE_DATABASE_URL",
        "SLUICE_PGBOUNCER_URL",
        "SLUICE_PROMETHEUS_URL",
        "SLUICE_DASHBOARDS_URL",
        "SLUICE_ALERTMANAGER_URL",
        "SLUICE_ALERTS_URL",
        "SLUICE_SMTP_URL",
        "SLUICE_MAILBOX_URL",
        "SLUICE_NGINX_EXPORTER_URL",
        "SLUICE_NGINX_LOG_EXPORTER_URL",
        "SLUICE_PGBOUNCER_EXPORTER_URL",
        "SLUICE_POSTGRES_EXPORTER_URL",
        "SLUICE_SUPERVISOR_PID",
        *(f"SLUICE_PID_{service.upper()}" for service in STACK_SERVICES),
    }
)

# docker-compose.prod.yml's own interpolation (.env.example).
COMPOSE = frozenset({"SLUICE_IMAGE", "SLUICE_HTTP_BIND", "SLUICE_HTTP_PORT"})

# Read by the nginx, PgBouncer and PostgreSQL templates only, not by the app:
# set by deploy/defaults.env, the launcher, compose and the k8s manifests.
# tests/unit/test_env_check.py checks this against the templates.
TEMPLATE_ONLY = frozenset(
    {
        "NGINX_CLIENT_MAX_BODY_SIZE",
        "NGINX_CLIENT_TIMEOUT",
        "NGINX_LISTEN",
        "NGINX_LISTEN_BACKLOG",
        "NGINX_LOGIN_BURST",
        "NGINX_LOGIN_RATE",
        "NGINX_LOG_DIR",
        "NGINX_MODULES_DIR",
        "NGINX_NJS_DIR",
        "NGINX_PID_FILE",
        "NGINX_PROBE_BURST",
        "NGINX_PROBE_RATE",
        "NGINX_PROBE_UPSTREAM",
        "NGINX_PROXY_CONNECT_TIMEOUT",
        "NGINX_REAL_IP_FROM",
        "NGINX_SIGNUP_BURST",
        "NGINX_SIGNUP_RATE",
        "NGINX_STATE_DIR",
        "NGINX_STATUS_LISTEN",
        "NGINX_UPSTREAM",
        "NGINX_WORKER_CONNECTIONS",
        "NGINX_WORKER_PROCESSES",
        "PGBOUNCER_AUTH_TYPE",
        "PGBOUNCER_CONFIG_DIR",
        "PGBOUNCER_LISTEN_ADDR",
        "PGBOUNCER_LISTEN_PORT",
        "PGBOUNCER_SERVER_HOST",
        "PGBOUNCER_SERVER_PORT",
        "PGBOUNCER_STATS_PASSWORD",
        "PGBOUNCER_STATS_USER",
        "POSTGRES_LISTEN_ADDRESSES",
        "POSTGRES_MONITOR_PASSWORD",
        "POSTGRES_MONITOR_USER",
        "POSTGRES_PORT",
        "POSTGRES_SOCKET_DIR",
        "POSTGRES_STATEMENT_TIMEOUT",
    }
)

# The official images' own variables, which compose and k8s set: nginx's
# template step and postgres' initdb.
IMAGES = frozenset(
    {
        "NGINX_ENVSUBST_TEMPLATE_DIR",
        "NGINX_ENVSUBST_OUTPUT_DIR",
        "NGINX_ENVSUBST_FILTER",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_INITDB_ARGS",
    }
)

NOT_SETTINGS = LAUNCHER | PUBLISHED | COMPOSE | TEMPLATE_ONLY | IMAGES

# Settings that one limit replaced; the close-match hint would point elsewhere.
REMOVED = {
    "SLUICE_DB_POOL_SIZE": "SLUICE_MAX_IN_FLIGHT sets the pool size",
    "SLUICE_THREADPOOL_TOKENS": "SLUICE_MAX_IN_FLIGHT sets the threadpool size",
}


class UnknownSetting(ValueError):
    pass


def refuse_unknown(environ: Iterable[str] | Mapping[str, str], settings: frozenset[str]) -> None:
    """Raise UnknownSetting for each name under a settings prefix that is not known.

    `settings` are the settings' own variable names; the hint is the closest
    known name, a setting's or one of the lists above.
    """
    known = settings | NOT_SETTINGS
    unknown = sorted(name for name in environ if has_settings_prefix(name) and name not in known)
    if not unknown:
        return
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        if name in REMOVED:
            hint = f"removed: {REMOVED[name]}"
        elif close:
            hint = f"did you mean {close[0]}?"
        else:
            hint = "see .env.example for every setting"
        problems.append(f"{name} ({hint})")
    raise UnknownSetting("unknown setting: " + "; ".join(problems))
