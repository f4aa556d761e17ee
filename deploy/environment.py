"""Every variable a local stack's templates and app read, and the rendered configs.

`stack_environment` starts from the base environment it is given (`make up`:
the launcher's own; the tests and the benchmark: theirs, `without_settings` of
their own plus what they set), adds the stack's hosts, ports and paths, the
limits derived by the settings object, deploy/defaults.env and the
PROMETHEUS_* variables; a value the base sets wins where an operator may pin
it. Nothing else is read: a variable of the launcher's own process that the
base leaves out configures nothing. `render_configs` renders the same
templates the containers use.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Mapping

from deploy import observability
from deploy.envfile import read_env_file
from deploy.layout import ROOT, Layout
from service.env_names import has_settings_prefix
from service.settings import Settings

DEFAULTS_ENV = ROOT / "deploy" / "defaults.env"
RENDER_SCRIPT = ROOT / "deploy" / "render-templates.sh"


# The monitoring templates' own variables (deploy/observability.py), which a
# stack takes from its base too.
_MONITORING_PREFIXES = ("PROMETHEUS_", "ALERTMANAGER_")


def without_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without any variable under a settings or monitoring prefix (PATH, HOME kept).

    The base of a stack that only what it is given configures (a test's, the
    benchmark's), whatever the shell that runs it exports.
    """
    return {
        key: value
        for key, value in environ.items()
        if not has_settings_prefix(key) and not key.startswith(_MONITORING_PREFIXES)
    }


def stack_environment(layout: Layout, base: Mapping[str, str]) -> dict[str, str]:
    """Every variable the templates and the app read, for this stack, from `base` alone.

    Raises ValueError (the settings' own check) for inconsistent limits or a
    name under a settings prefix that names nothing.
    """
    base = dict(base)
    p = layout.ports
    env = dict(base)
    env.update(
        {
            "SLUICE_ENVIRONMENT": env.get("SLUICE_ENVIRONMENT", "local"),
            "SLUICE_DB_HOST": "127.0.0.1",
            "SLUICE_DB_PORT": str(p["pgbouncer"]),
            "SLUICE_DB_USER": env.get("SLUICE_DB_USER", "sluice"),
            "SLUICE_DB_NAME": env.get("SLUICE_DB_NAME", "sluice"),
            "SLUICE_DB_PASSWORD": env.get("SLUICE_DB_PASSWORD", "sluice-local"),
            "SLUICE_SECRET_KEY": env.get("SLUICE_SECRET_KEY") or _stack_secret(layout),
            "SLUICE_BIND_HOST": "127.0.0.1",
            "SLUICE_BIND_PORT": str(p["gunicorn"]),
            "SLUICE_PROBE_PORT": str(p["probes"]),
            "SLUICE_METRICS_HOST": "127.0.0.1",
            "SLUICE_METRICS_PORT": str(p["metrics"]),
            "SLUICE_METRICS_MULTIPROC_DIR": str(layout.state / "metrics"),
            # The stack's own SMTP server (deploy/services.py), plain SMTP on loopback.
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(p["smtp"]),
            "SMTP_TLS": "false",
            "SMTP_SSL": "false",
            "EMAILS_FROM_EMAIL": env.get("EMAILS_FROM_EMAIL", "noreply@example.com"),
        }
    )
    settings = Settings.from_environ(env)
    # Derived limits, unless the base environment sets one explicitly (tests
    # and operators may pin a single knob; the settings check still applies).
    env.update({k: v for k, v in settings.limits.as_env().items() if k not in base})
    env.update({k: env.get(k, v) for k, v in read_env_file(DEFAULTS_ENV).items()})
    env.update(
        {
            # Local paths and ports; the compose file sets the container ones.
            "NGINX_LISTEN": f"127.0.0.1:{p['nginx']}",
            "NGINX_STATUS_LISTEN": f"127.0.0.1:{p['nginx_status']}",
            "NGINX_UPSTREAM": f"127.0.0.1:{p['gunicorn']}",
            "NGINX_PROBE_UPSTREAM": f"127.0.0.1:{p['probes']}",
            "NGINX_PID_FILE": str(layout.state / "nginx.pid"),
            "NGINX_LOG_DIR": str(layout.logs),
            "NGINX_STATE_DIR": str(layout.nginx_tmp),
            "NGINX_NJS_DIR": str(ROOT / "nginx" / "njs"),
            "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
            "PGBOUNCER_LISTEN_PORT": str(p["pgbouncer"]),
            "PGBOUNCER_SERVER_HOST": "127.0.0.1",
            "PGBOUNCER_SERVER_PORT": str(p["postgres"]),
            "PGBOUNCER_CONFIG_DIR": str(layout.db_rendered / "pgbouncer"),
            # Loopback-only cluster owned by this stack: trust, said plainly in
            # the README. The compose deployment uses scram-sha-256.
            "PGBOUNCER_AUTH_TYPE": "trust",
            "PGBOUNCER_STATS_PASSWORD": env.get("PGBOUNCER_STATS_PASSWORD", "sluice-local-stats"),
            # The exporter's own role (pg_monitor); loopback is trusted here,
            # but the role and its password file are the same as elsewhere.
            "POSTGRES_MONITOR_PASSWORD": env.get(
                "POSTGRES_MONITOR_PASSWORD", "sluice-local-monitor"
            ),
            "POSTGRES_LISTEN_ADDRESSES": "127.0.0.1",
            "POSTGRES_PORT": str(p["postgres"]),
            "POSTGRES_SOCKET_DIR": str(layout.pgsocket),
        }
    )
    env.update(observability.environment(layout, env))
    # What Gunicorn and the migrations will read, checked here before anything starts.
    Settings.from_environ(env)
    return env


def first_superuser(layout: Layout, env: Mapping[str, str]) -> dict[str, str]:
    """FIRST_SUPERUSER and its password for the migrate step: the environment's, or
    admin@example.com with a random password kept in <state>/first_superuser.env (0600)."""
    if env.get("FIRST_SUPERUSER"):
        return {k: env.get(k, "") for k in ("FIRST_SUPERUSER", "FIRST_SUPERUSER_PASSWORD")}
    path = layout.first_superuser_file
    if not path.exists():
        layout.state.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(
            "FIRST_SUPERUSER='admin@example.com'\n"
            f"FIRST_SUPERUSER_PASSWORD='{secrets.token_urlsafe(18)}'\n"
        )
    return read_env_file(path)


def _stack_secret(layout: Layout) -> str:
    """A random signing key per stack, kept in its state so tokens survive restarts."""
    path = layout.state / "secret_key"
    if not path.exists():
        layout.state.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def render_configs(layout: Layout, env: Mapping[str, str]) -> None:
    """The nginx, PgBouncer, PostgreSQL, Prometheus and Alertmanager templates, with `env`."""
    for source, target in (
        (ROOT / "nginx" / "templates", layout.rendered / "nginx"),
        (ROOT / "deploy" / "pgbouncer", layout.db_rendered / "pgbouncer"),
        (ROOT / "deploy" / "postgres", layout.db_rendered / "postgres"),
        (ROOT / "deploy" / "prometheus", layout.rendered / "prometheus"),
        (ROOT / "deploy" / "alertmanager", layout.rendered / "alertmanager"),
        # The exporters' password files (0600), read through PGPASSFILE.
        (ROOT / "deploy" / "pgbouncer-exporter", layout.rendered / "pgbouncer-exporter"),
        (ROOT / "deploy" / "postgres-exporter", layout.rendered / "postgres-exporter"),
    ):
        if source.is_dir():
            subprocess.run([str(RENDER_SCRIPT), str(source), str(target)], env=env, check=True)
    observability.render(layout, env)
