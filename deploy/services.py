"""The local stack's long-running processes, in start order, as mirakuru executors.

Each `Service` is one process behind its readiness check: the request path
(PostgreSQL, PgBouncer, the SMTP server the app sends mail to, Gunicorn,
nginx), then the exporters and Prometheus (deploy/observability.py).
`prepare` runs once before its first start (what the process needs to
exist: a cluster, a role, the schema, a valid config);
`ready` runs after every start (PostgreSQL's port opens before it accepts).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

from mirakuru import Executor, HTTPExecutor, TCPExecutor

from deploy import database, observability
from deploy.binaries import as_db_user, binary
from deploy.environment import first_superuser
from deploy.errors import StackError, tail
from deploy.layout import ROOT, Layout

# How long each service may take to become ready (PostgreSQL's recovery, the
# migrations' first connection); `up` waits for the whole stack a few times that.
START_TIMEOUT_S = 90


@dataclass
class Service:
    name: str
    executor: Executor
    prepare: Callable[[], None] | None = None
    ready: Callable[[], None] | None = None


def services(
    layout: Layout, env: Mapping[str, str], *, log: Callable[[str], IO[str]]
) -> list[Service]:
    """Every process of the stack, in start order; nothing started yet."""
    p = layout.ports
    conf = layout.db_rendered / "postgres" / "postgresql.conf"
    nginx_conf = layout.rendered / "nginx" / "nginx.conf"
    nginx = [binary("nginx"), "-e", str(layout.log("error")), "-c", str(nginx_conf)]
    pgbouncer_ini = layout.db_rendered / "pgbouncer" / "pgbouncer.ini"
    path = [
        Service(
            "postgres",
            TCPExecutor(
                as_db_user(
                    [
                        binary("postgres"),
                        "-D",
                        str(layout.pgdata),
                        f"-cconfig_file={conf}",
                        f"-chba_file={layout.pgdata / 'pg_hba.conf'}",
                    ]
                ),
                host="127.0.0.1",
                port=p["postgres"],
                cwd=str(layout.db_dir),
                timeout=START_TIMEOUT_S,
                stop_signal=signal.SIGINT,  # fast shutdown
                stdout=log("postgres"),
                stderr=subprocess.STDOUT,
            ),
            prepare=lambda: database.init_cluster(layout),
            ready=lambda: database.wait_accepting(layout, timeout_s=START_TIMEOUT_S),
        ),
        Service(
            "pgbouncer",
            TCPExecutor(
                as_db_user([binary("pgbouncer"), str(pgbouncer_ini)]),
                host="127.0.0.1",
                port=p["pgbouncer"],
                cwd=str(layout.db_dir),
                timeout=START_TIMEOUT_S,
                stop_signal=signal.SIGINT,  # safe shutdown: let transactions finish
                stdout=log("pgbouncer"),
                stderr=subprocess.STDOUT,
            ),
            prepare=lambda: database.ensure_database(layout, env),
        ),
        # aiosmtpd's own server and Maildir handler: every message it accepts
        # is a file in <state>/mail/new (-n: never switch to `nobody`).
        Service(
            "smtp",
            TCPExecutor(
                [
                    sys.executable,
                    "-m",
                    "aiosmtpd",
                    "-n",
                    "-u",  # SMTPUTF8: internationalized addresses, as EmailStr allows
                    "-l",
                    f"127.0.0.1:{p['smtp']}",
                    "-c",
                    "aiosmtpd.handlers.Mailbox",
                    str(layout.mail_dir),
                ],
                host="127.0.0.1",
                port=p["smtp"],
                cwd=str(ROOT),
                timeout=START_TIMEOUT_S,
                stop_signal=signal.SIGTERM,
                stdout=log("smtp"),
                stderr=subprocess.STDOUT,
            ),
        ),
        Service(
            "gunicorn",
            HTTPExecutor(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    str(ROOT / "deploy" / "gunicorn.conf.py"),
                    "service.main:app",
                ],
                url=layout.url("gunicorn", "/healthz"),
                method="GET",
                cwd=str(ROOT),
                envvars=dict(env),
                timeout=START_TIMEOUT_S,
                stop_signal=signal.SIGTERM,
                stdout=log("gunicorn"),
                stderr=subprocess.STDOUT,
            ),
            prepare=lambda: _migrate(layout, env),
        ),
        Service(
            "nginx",
            HTTPExecutor(
                [*nginx, "-g", "daemon off;"],
                url=layout.url("nginx", "/healthz"),
                method="GET",
                # nginx/njs/sluice.js checks tokens with the app's key and algorithm.
                envvars=_nginx_environment(env),
                timeout=START_TIMEOUT_S,
                stop_signal=signal.SIGQUIT,  # graceful: finish in-flight requests
                stdout=log("nginx"),
                stderr=subprocess.STDOUT,
            ),
            prepare=lambda: _check_nginx_config(nginx),
        ),
    ]
    extra = observability.executors(layout, env, log=log, timeout_s=START_TIMEOUT_S)
    return path + [Service(name, executor) for name, executor in extra]


def _nginx_environment(env: Mapping[str, str]) -> dict[str, str]:
    keep = ("PATH", "SLUICE_SECRET_KEY", "SLUICE_JWT_ALGORITHM")
    return {key: env[key] for key in keep if key in env}


def _migrate(layout: Layout, env: Mapping[str, str]) -> None:
    """Alembic, connected to PostgreSQL directly rather than through PgBouncer.

    It also creates the first superuser (migrations/env.py); only this step
    gets its password.
    """
    direct = dict(env, **first_superuser(layout, env), SLUICE_DB_PORT=str(layout.ports["postgres"]))
    with open(layout.log("migrate"), "a") as log:
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
            env=direct,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise StackError("migrations failed:\n" + tail(layout.log("migrate")))


def _check_nginx_config(nginx: list[str]) -> None:
    check = subprocess.run([*nginx, "-t", "-q"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise StackError(f"nginx config invalid:\n{check.stderr}")
