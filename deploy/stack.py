"""The local stack: Sluice's whole request path from host binaries.

    python -m deploy.stack up | down | status

`up` starts a supervisor in the background and waits until it reports every
process ready (or failed). The supervisor renders the same config templates
the containers use, starts PostgreSQL (its own cluster under the state
directory), PgBouncer, the migrations, Gunicorn, nginx, the exporters and
Prometheus through mirakuru executors (each waits for its readiness check),
writes `<state>/stack.env`, and stops them all, in reverse order, on SIGTERM.
`down` signals the supervisor and then makes sure every PID it recorded is
gone; `clean` stops the stack and removes its state. Ports are
SLUICE_PORT_BASE + a fixed offset, so stacks with different bases run side by
side.

As root, PostgreSQL and PgBouncer run as the postgres user, which usually
cannot reach the checkout (a clone in root's 0700 home): what they read and
write lives in a database directory under /var/lib/sluice named from a hash of
the state directory's path (`Layout.db_dir`); everything else, logs included,
stays in the state directory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pwd
import re
import secrets
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from mirakuru import Executor, HTTPExecutor, SimpleExecutor, TCPExecutor

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT_BASE = 24100
PORT_OFFSETS = {
    "nginx": 0,
    "nginx_status": 1,
    "gunicorn": 2,
    "metrics": 3,
    "pgbouncer": 4,
    "postgres": 5,
    "prometheus": 6,
    "postgres_exporter": 7,
    "pgbouncer_exporter": 8,
    "nginx_exporter": 9,
    "nginx_log_exporter": 10,
}
REQUIRED_BINARIES = {
    "initdb": "postgresql",
    "postgres": "postgresql",
    "pgbouncer": "pgbouncer",
    "nginx": "nginx",
    "envsubst": "gettext-base",
    "prometheus": "prometheus",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "prometheus-nginx-exporter": "prometheus-nginx-exporter",
    "mtail": "mtail",
}
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
START_TIMEOUT_S = 90
DB_SERVICE_USER = "postgres"
# As root, the postgres user's files live here (one directory per state directory).
DB_ROOT = Path("/var/lib/sluice")
# Creates the app's role and database; the postgres image runs it too.
ROLE_SCRIPT = ROOT / "deploy" / "postgres-init" / "10-sluice-role.sh"


class StackError(RuntimeError):
    pass


@dataclass
class Layout:
    """Where a stack lives: its state directory and its ports."""

    state: Path
    port_base: int
    ports: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.ports = {name: self.port_base + off for name, off in PORT_OFFSETS.items()}

    @property
    def env_file(self) -> Path:
        return self.state / "stack.env"

    @property
    def supervisor_pid(self) -> Path:
        return self.state / "supervisor.pid"

    @property
    def pids_file(self) -> Path:
        return self.state / "pids"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def rendered(self) -> Path:
        return self.state / "config"

    @property
    def db_dir(self) -> Path:
        """What PostgreSQL and PgBouncer read and write: data, sockets, their configs.

        The state directory itself unless they run as another user (as root),
        who may not reach it; then a directory of its own under DB_ROOT, named
        from a hash of the state path so several stacks still coexist.
        """
        if not _switches_user():
            return self.state
        digest = hashlib.sha256(str(self.state).encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9_-]+", "-", self.state.name).strip("-")[:32] or "stack"
        return DB_ROOT / f"{name}-{digest}"

    @property
    def pgdata(self) -> Path:
        return self.db_dir / "pgdata"

    @property
    def pgsocket(self) -> Path:
        return self.db_dir / "pgsocket"

    @property
    def db_rendered(self) -> Path:
        """Rendered PostgreSQL and PgBouncer configs (the others are in `rendered`)."""
        return self.db_dir / "config"

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"


def layout_from_env(environ: dict[str, str] | None = None) -> Layout:
    environ = dict(os.environ if environ is None else environ)
    base = int(environ.get("SLUICE_PORT_BASE", DEFAULT_PORT_BASE))
    state = Path(environ.get("SLUICE_STATE_DIR", ROOT / ".sluice")).resolve()
    return Layout(state=state, port_base=base)


# --------------------------------------------------------------------------
# Environment and config rendering


def stack_environment(layout: Layout) -> dict[str, str]:
    """Every variable the templates and the app read, for this stack."""
    p = layout.ports
    env = dict(os.environ)
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
            "SLUICE_METRICS_HOST": "127.0.0.1",
            "SLUICE_METRICS_PORT": str(p["metrics"]),
            "SLUICE_METRICS_MULTIPROC_DIR": str(layout.state / "metrics"),
        }
    )
    settings = Settings(_env_file=None, **_settings_kwargs(env))  # type: ignore[call-arg]
    # Derived limits, unless the environment sets one explicitly (tests and
    # operators may pin a single knob; the settings check still applies).
    env.update({k: v for k, v in settings.limits.as_env().items() if k not in os.environ})
    env.update(_read_defaults(ROOT / "deploy" / "defaults.env", env))
    env.update(
        {
            # Local paths and ports; the compose file sets the container ones.
            "NGINX_LISTEN": f"127.0.0.1:{p['nginx']}",
            "NGINX_STATUS_LISTEN": f"127.0.0.1:{p['nginx_status']}",
            "NGINX_UPSTREAM": f"127.0.0.1:{p['gunicorn']}",
            "NGINX_PID_FILE": str(layout.state / "nginx.pid"),
            "NGINX_LOG_DIR": str(layout.logs),
            "NGINX_STATE_DIR": str(layout.state / "nginx-tmp"),
            "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
            "PGBOUNCER_LISTEN_PORT": str(p["pgbouncer"]),
            "PGBOUNCER_SERVER_HOST": "127.0.0.1",
            "PGBOUNCER_SERVER_PORT": str(p["postgres"]),
            "PGBOUNCER_CONFIG_DIR": str(layout.db_rendered / "pgbouncer"),
            # Loopback-only cluster owned by this stack: trust, said plainly in
            # the README. The compose deployment uses scram-sha-256.
            "PGBOUNCER_AUTH_TYPE": "trust",
            "PGBOUNCER_STATS_PASSWORD": env.get("PGBOUNCER_STATS_PASSWORD", "sluice-local-stats"),
            "POSTGRES_LISTEN_ADDRESSES": "127.0.0.1",
            "POSTGRES_PORT": str(p["postgres"]),
            "POSTGRES_SOCKET_DIR": str(layout.pgsocket),
        }
    )
    from deploy import observability

    env.update(observability.environment(layout, env))
    return env


def _stack_secret(layout: Layout) -> str:
    """A random signing key per stack, kept in its state so tokens survive restarts."""
    path = layout.state / "secret_key"
    if not path.exists():
        layout.state.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _settings_kwargs(env: dict[str, str]) -> dict[str, Any]:
    """Settings read from `env` rather than the launcher's own environment."""
    prefix = "SLUICE_"
    return {
        key[len(prefix) :].lower(): value
        for key, value in env.items()
        if key.startswith(prefix) and key[len(prefix) :].lower() in Settings.model_fields
    }


def _read_defaults(path: Path, env: dict[str, str]) -> dict[str, str]:
    """KEY=VALUE defaults; a value already in `env` wins."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key] = env.get(key, value)
    return values


def render_configs(layout: Layout, env: dict[str, str]) -> None:
    script = ROOT / "deploy" / "render-templates.sh"
    for source, target in (
        (ROOT / "nginx" / "templates", layout.rendered / "nginx"),
        (ROOT / "deploy" / "pgbouncer", layout.db_rendered / "pgbouncer"),
        (ROOT / "deploy" / "postgres", layout.db_rendered / "postgres"),
        (ROOT / "deploy" / "prometheus", layout.rendered / "prometheus"),
    ):
        if source.is_dir():
            subprocess.run([str(script), str(source), str(target)], env=env, check=True)


# --------------------------------------------------------------------------
# Processes


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(d / name) for d in PG_BIN_DIRS if (d / name).exists()), None
    )
    if found is None:
        package = REQUIRED_BINARIES.get(name, name)
        raise StackError(f"{name} not found: run `make packages` (installs {package})")
    return found


def _switches_user() -> bool:
    """PostgreSQL and PgBouncer refuse to run as root: as root, they run as postgres."""
    return os.geteuid() == 0


def _as_db_user(argv: list[str]) -> list[str]:
    """PostgreSQL and PgBouncer refuse to run as root: drop to the postgres user."""
    if not _switches_user():
        return argv
    return [
        _binary("setpriv"),
        f"--reuid={DB_SERVICE_USER}",
        f"--regid={DB_SERVICE_USER}",
        "--init-groups",
        *argv,
    ]


@dataclass
class Service:
    name: str
    build: Callable[[Layout, dict[str, str], Any], Executor | SimpleExecutor]


class Supervisor:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.env = stack_environment(layout)
        self.started: list[tuple[str, Executor | SimpleExecutor]] = []
        self._stop = threading.Event()

    def log(self, name: str) -> Any:
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        return open(self.layout.logs / f"{name}.log", "a", buffering=1)

    def start(self, name: str, executor: Executor | SimpleExecutor) -> None:
        try:
            executor.start()
        except Exception as exc:
            raise StackError(
                f"{name} did not become ready: {exc}\n"
                f"--- last lines of {self.layout.logs / (name + '.log')} ---\n"
                + _tail(self.layout.logs / f"{name}.log")
            ) from exc
        self.started.append((name, executor))
        self._record_pids()

    def _record_pids(self) -> None:
        lines = []
        for name, executor in self.started:
            pid = executor.process.pid if executor.process else None
            if pid:
                created = psutil.Process(pid).create_time()
                lines.append(f"{name} {pid} {created}")
        self.layout.pids_file.write_text("\n".join(lines) + "\n")

    def run(self) -> None:
        layout, env = self.layout, self.env
        layout.state.mkdir(parents=True, exist_ok=True)
        for sub in ("logs", "nginx-tmp"):
            (layout.state / sub).mkdir(exist_ok=True)
        _prepare_db_dir(layout)
        render_configs(layout, env)
        self._prepare_postgres()
        self.start_postgres()
        self._ensure_database()
        self.start_pgbouncer()
        self._migrate()
        self.start_gunicorn()
        self.start_nginx()
        self.start_observability()

    # Each start_* is one hop of the request path, in dependency order.

    def _prepare_postgres(self) -> None:
        # Their logs are the supervisor's files (stdout/stderr), so only the
        # database directory needs to be theirs.
        layout = self.layout
        if _switches_user():
            _chown_to_db_user(layout.db_rendered)
        if (layout.pgdata / "PG_VERSION").exists():
            return
        layout.pgdata.mkdir(mode=0o700, exist_ok=True)
        if _switches_user():
            _chown_to_db_user(layout.pgdata)
        subprocess.run(
            _as_db_user(
                [
                    _binary("initdb"),
                    "-D",
                    str(layout.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ]
            ),
            check=True,
            cwd=layout.db_dir,  # the postgres user may not enter the checkout
            stdout=self.log("initdb"),
            stderr=subprocess.STDOUT,
        )

    def start_postgres(self) -> None:
        conf = self.layout.db_rendered / "postgres" / "postgresql.conf"
        self.start(
            "postgres",
            TCPExecutor(
                _as_db_user(
                    [
                        _binary("postgres"),
                        "-D",
                        str(self.layout.pgdata),
                        f"-cconfig_file={conf}",
                        f"-chba_file={self.layout.pgdata / 'pg_hba.conf'}",
                    ]
                ),
                host="127.0.0.1",
                port=self.layout.ports["postgres"],
                cwd=str(self.layout.db_dir),
                timeout=START_TIMEOUT_S,
                stop_signal=signal.SIGINT,  # fast shutdown
                stdout=self.log("postgres"),
                stderr=subprocess.STDOUT,
            ),
        )
        self._wait_postgres_accepts()

    def _wait_postgres_accepts(self) -> None:
        # The port opens before recovery ends; pg_isready waits for "accepting".
        subprocess.run(
            [
                _binary("pg_isready"),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.layout.ports["postgres"]),
                "-t",
                str(START_TIMEOUT_S),
            ],
            check=True,
        )

    def _ensure_database(self) -> None:
        # The same script the postgres image runs on a new volume (compose, k8s).
        psql_dir = str(Path(_binary("psql")).parent)
        env = {
            **self.env,
            "PATH": f"{psql_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.layout.ports["postgres"]),
            "POSTGRES_USER": "postgres",
        }
        result = subprocess.run(
            [str(ROLE_SCRIPT)], env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise StackError(f"{ROLE_SCRIPT.name} failed: {result.stderr.strip()}")

    def start_pgbouncer(self) -> None:
        ini = self.layout.db_rendered / "pgbouncer" / "pgbouncer.ini"
        self.start(
            "pgbouncer",
            TCPExecutor(
                _as_db_user([_binary("pgbouncer"), str(ini)]),
                host="127.0.0.1",
                port=self.layout.ports["pgbouncer"],
                cwd=str(self.layout.db_dir),
                timeout=START_TIMEOUT_S,
                stop_signal=signal.SIGINT,  # safe shutdown: let transactions finish
                stdout=self.log("pgbouncer"),
                stderr=subprocess.STDOUT,
            ),
        )

    def _migrate(self) -> None:
        env = dict(self.env, SLUICE_DB_PORT=str(self.layout.ports["postgres"]))
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
            env=env,
            cwd=ROOT,
            stdout=self.log("migrate"),
            stderr=subprocess.STDOUT,
            check=False,
        )
        if result.returncode != 0:
            raise StackError("migrations failed:\n" + _tail(self.layout.logs / "migrate.log"))

    def start_gunicorn(self) -> None:
        self.start(
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
                url=self.layout.url("gunicorn", "/healthz"),
                method="GET",
                cwd=str(ROOT),
                envvars=self.env,
                timeout=START_TIMEOUT_S,
                stop_signal=signal.SIGTERM,
                stdout=self.log("gunicorn"),
                stderr=subprocess.STDOUT,
            ),
        )

    def start_nginx(self) -> None:
        conf = self.layout.rendered / "nginx" / "nginx.conf"
        nginx = [_binary("nginx"), "-e", str(self.layout.logs / "error.log"), "-c", str(conf)]
        check = subprocess.run([*nginx, "-t", "-q"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise StackError(f"nginx config invalid:\n{check.stderr}")
        self.start(
            "nginx",
            HTTPExecutor(
                [*nginx, "-g", "daemon off;"],
                url=self.layout.url("nginx", "/healthz"),
                method="GET",
                timeout=START_TIMEOUT_S,
                stop_signal=signal.SIGQUIT,  # graceful: finish in-flight requests
                stdout=self.log("nginx"),
                stderr=subprocess.STDOUT,
            ),
        )

    def start_observability(self) -> None:
        """Exporters and Prometheus (deploy/prometheus), when configured."""
        from deploy import observability

        for name, executor in observability.executors(self):
            self.start(name, executor)

    def stop_all(self) -> None:
        for name, executor in reversed(self.started):
            try:
                executor.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {name}: {exc}", file=sys.stderr)
        self.started.clear()


def _db_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(DB_SERVICE_USER)
    except KeyError:
        raise StackError(
            f"no {DB_SERVICE_USER} user: run `make packages` (installs postgresql)"
        ) from None


def _chown_to_db_user(top: Path) -> None:
    user = _db_user()
    for path in [top, *top.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


def _prepare_db_dir(layout: Layout) -> None:
    """Create the database directory: under DB_ROOT, 0700 and the postgres user's, as root."""
    if layout.db_dir == layout.state:
        layout.pgsocket.mkdir(exist_ok=True)
        return
    user = _db_user()
    try:
        DB_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        info = DB_ROOT.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
            raise StackError(f"{DB_ROOT} is not a directory owned by root: remove it")
        DB_ROOT.chmod(0o755)  # the postgres user passes through it
        layout.db_dir.mkdir(mode=0o700, exist_ok=True)
        info = layout.db_dir.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (0, user.pw_uid):
            raise StackError(f"{layout.db_dir} is not a directory of root or {user.pw_name}")
        os.chown(layout.db_dir, user.pw_uid, user.pw_gid)
        layout.db_dir.chmod(0o700)
        # Which state directory it belongs to, for people and for `clean --all`.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        fd = os.open(layout.db_dir / "state-dir", flags, 0o644)
        with os.fdopen(fd, "w") as marker:
            marker.write(f"{layout.state}\n")
        _adopt_older_layout(layout)
        layout.pgsocket.mkdir(exist_ok=True)
        _chown_to_db_user(layout.pgsocket)
    except OSError as exc:
        raise StackError(f"cannot prepare the database directory {layout.db_dir}: {exc}") from exc


def _adopt_older_layout(layout: Layout) -> None:
    """A cluster an older launcher made in the state directory moves to db_dir."""
    old = layout.state / "pgdata"
    if (old / "PG_VERSION").exists() and not layout.pgdata.exists() and not _postmaster(old):
        shutil.move(old, layout.pgdata)
        _chown_to_db_user(layout.pgdata)
    for stale in ("pgsocket", "config/postgres", "config/pgbouncer"):  # now in db_dir
        shutil.rmtree(layout.state / stale, ignore_errors=True)


def _postmaster(pgdata: Path) -> psutil.Process | None:
    """The PostgreSQL server running on `pgdata`, if one is."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        proc = psutil.Process(pid)
        if "postgres" in proc.name():
            return proc
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    return None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------
# Commands


def supervise(layout: Layout, ready_fd: int) -> int:
    """Run in the background: start everything, report, wait for SIGTERM, stop."""
    supervisor = Supervisor(layout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    layout.state.mkdir(parents=True, exist_ok=True)
    layout.supervisor_pid.write_text(f"{os.getpid()}\n")
    ready = os.fdopen(ready_fd, "w")
    try:
        supervisor.run()
        write_stack_env(layout, supervisor)
        ready.write("READY\n")
        ready.close()
        while not stop.wait(1.0):
            for name, executor in supervisor.started:
                if not executor.running():
                    print(f"{name} exited unexpectedly", file=sys.stderr)
        return 0
    except Exception as exc:
        if not ready.closed:
            ready.write(f"FAILED {exc}\n")
            ready.close()
        return 1
    finally:
        supervisor.stop_all()
        layout.pids_file.unlink(missing_ok=True)
        layout.supervisor_pid.unlink(missing_ok=True)
        layout.env_file.unlink(missing_ok=True)


def write_stack_env(layout: Layout, supervisor: Supervisor) -> None:
    env = supervisor.env
    p = layout.ports
    values = {
        "SLUICE_URL": layout.url("nginx"),
        "SLUICE_APP_URL": layout.url("gunicorn"),
        "SLUICE_METRICS_URL": layout.url("metrics", "/metrics"),
        "SLUICE_NGINX_STATUS_URL": layout.url("nginx_status", "/stub_status"),
        "SLUICE_DATABASE_URL": (
            f"postgresql://postgres@127.0.0.1:{p['postgres']}/{env['SLUICE_DB_NAME']}"
        ),
        "SLUICE_PGBOUNCER_URL": (
            f"postgresql://{env['SLUICE_DB_USER']}@127.0.0.1:{p['pgbouncer']}/"
            f"{env['SLUICE_DB_NAME']}"
        ),
        "SLUICE_PROMETHEUS_URL": layout.url("prometheus"),
        "SLUICE_STATE_DIR": str(layout.state),
        "SLUICE_PORT_BASE": str(layout.port_base),
        "SLUICE_SUPERVISOR_PID": str(os.getpid()),
    }
    for name, executor in supervisor.started:
        if executor.process is not None:
            values[f"SLUICE_PID_{name.upper()}"] = str(executor.process.pid)
    for key, value in env.items():
        if key.startswith(("SLUICE_", "NGINX_", "PGBOUNCER_", "POSTGRES_")) and key not in values:
            if "PASSWORD" in key or "SECRET" in key:
                continue
            values.setdefault(key, value)
    tmp = layout.env_file.with_suffix(".tmp")
    tmp.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()))
    tmp.replace(layout.env_file)


def _supervisor_alive(layout: Layout) -> psutil.Process | None:
    try:
        pid = int(layout.supervisor_pid.read_text())
        proc = psutil.Process(pid)
    except (OSError, ValueError, psutil.Error):
        return None
    if proc.is_running() and "deploy.stack" in " ".join(proc.cmdline()):
        return proc
    return None


def up(layout: Layout) -> int:
    if _supervisor_alive(layout) and layout.env_file.exists():
        print(f"Sluice stack already running (state {layout.state}).")
        return status(layout)
    _reap_leftovers(layout)
    try:
        stack_environment(layout)  # refuse inconsistent settings before starting anything
    except ValueError as exc:
        raise StackError(f"configuration refused: {exc}") from exc
    layout.state.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(exist_ok=True)
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    with open(layout.logs / "supervisor.log", "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.stack", "supervise", "--ready-fd", str(write_fd)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=True,
            env=dict(
                os.environ,
                SLUICE_STATE_DIR=str(layout.state),
                SLUICE_PORT_BASE=str(layout.port_base),
            ),
        )
    os.close(write_fd)
    message = _read_line(read_fd, timeout=START_TIMEOUT_S * 4)
    os.close(read_fd)
    if message != "READY":
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
        print(
            f"Sluice stack failed to start: {message or 'no answer from the supervisor'}",
            file=sys.stderr,
        )
        print(f"Logs: {layout.logs}", file=sys.stderr)
        return 1
    print(f"Sluice stack up in {time.monotonic() - started:.1f}s")
    return status(layout)


def _read_line(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return "timed out waiting for the supervisor"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _recorded(layout: Layout) -> list[tuple[str, psutil.Process]]:
    """Processes this stack recorded that are still the same processes."""
    found = []
    try:
        lines = layout.pids_file.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        name, pid, created = line.split()
        try:
            proc = psutil.Process(int(pid))
            if abs(proc.create_time() - float(created)) < 0.01:
                found.append((name, proc))
        except psutil.Error:
            continue
    return found


def _reap_leftovers(layout: Layout) -> None:
    """Stop processes a dead supervisor left behind (by recorded PID only)."""
    procs = [proc for _, proc in _recorded(layout)]
    for proc in procs:
        for child in proc.children(recursive=True):
            procs.append(child)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    layout.pids_file.unlink(missing_ok=True)


def _stop(layout: Layout) -> None:
    supervisor = _supervisor_alive(layout)
    if supervisor is not None:
        supervisor.terminate()
        try:
            supervisor.wait(timeout=120)
        except psutil.TimeoutExpired:
            supervisor.kill()
    _reap_leftovers(layout)
    layout.supervisor_pid.unlink(missing_ok=True)
    layout.env_file.unlink(missing_ok=True)


def down(layout: Layout) -> int:
    _stop(layout)
    kept = layout.state if layout.db_dir == layout.state else f"{layout.state} and {layout.db_dir}"
    print(f"Sluice stack down (state kept in {kept}; `make clean` removes it).")
    return 0


def clean(layout: Layout, everything: bool = False) -> int:
    """Stop the stack and remove its state and database directories.

    With `everything` (`make clean`), also `<checkout>/.sluice` and every
    `<checkout>/.sluice-*` stack (test and benchmark stacks), and database
    directories under DB_ROOT whose state directory in this checkout is gone.
    """
    states = [layout.state]
    if everything:
        states += [ROOT / ".sluice", *sorted(ROOT.glob(".sluice-*"))]
        states += _orphaned_states()
    ok = True
    for state in dict.fromkeys(states):
        ok &= _remove_stack(Layout(state=state, port_base=layout.port_base))
    return 0 if ok else 1


def _remove_stack(layout: Layout) -> bool:
    dirs = [d for d in dict.fromkeys((layout.state, layout.db_dir)) if d.is_dir()]
    dirs = [d for d in dirs if not d.is_symlink()]
    if not dirs:
        return True
    _stop(layout)
    running = [proc.pid for _, proc in _recorded(layout)]
    running += [
        proc.pid
        for pgdata in {layout.pgdata, layout.state / "pgdata"}
        if (proc := _postmaster(pgdata)) is not None
    ]
    if running:
        print(f"not removing {layout.state}: still running: pids {running}", file=sys.stderr)
        return False
    for path in dirs:
        shutil.rmtree(path)
    print("removed " + " and ".join(str(d) for d in dirs))
    return True


def _orphaned_states() -> list[Path]:
    """State paths in this checkout that no longer exist but whose db_dir does."""
    if not _switches_user() or not DB_ROOT.is_dir():
        return []
    found = []
    for db_dir in sorted(DB_ROOT.iterdir()):
        try:
            state = Path((db_dir / "state-dir").read_text().strip())
        except OSError:
            continue
        layout = Layout(state=state, port_base=0)
        if state.is_relative_to(ROOT) and not state.exists() and layout.db_dir == db_dir:
            found.append(state)
    return found


def status(layout: Layout) -> int:
    from deploy import observability

    supervisor = _supervisor_alive(layout)
    if supervisor is None:
        print(f"Sluice stack not running (port base {layout.port_base}).")
        return 3
    print(f"supervisor  pid {supervisor.pid}")
    for name, proc in _recorded(layout):
        print(f"{name:20} pid {proc.pid:<8} {'running' if proc.is_running() else 'dead'}")
    print()
    for key in (
        "SLUICE_URL",
        "SLUICE_METRICS_URL",
        "SLUICE_PROMETHEUS_URL",
        *observability.URL_KEYS,
        "SLUICE_DATABASE_URL",
        "SLUICE_PGBOUNCER_URL",
    ):
        print(f"{key:24} {read_stack_env(layout).get(key, '-')}")
    print(f"{'docs':24} {layout.url('nginx', '/docs')}")
    print(f"{'logs':24} {layout.logs}")
    if layout.db_dir != layout.state:
        print(f"{'database files':24} {layout.db_dir}  (PostgreSQL data, sockets, configs)")
    print(f"{'env':24} {layout.env_file}  (source it: . {layout.env_file})")
    return 0


def read_stack_env(layout: Layout) -> dict[str, str]:
    values = {}
    try:
        for line in layout.env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            values[key] = shlex.split(value)[0] if value else ""
    except OSError:
        pass
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "clean", "supervise"])
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument(
        "--all", action="store_true", help="clean: also every .sluice* stack of this checkout"
    )
    args = parser.parse_args(argv)
    layout = layout_from_env()
    try:
        if args.command == "supervise":
            return supervise(layout, args.ready_fd)
        if args.command == "clean":
            return clean(layout, everything=args.all)
        return {"up": up, "down": down, "status": status}[args.command](layout)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
