"""The local stack: Sluice's whole request path from host binaries.

    python -m deploy.stack up | down | status

`up` starts a supervisor in the background and waits until it reports every
process ready (or failed). The supervisor renders the same config templates
the containers use, starts PostgreSQL (its own cluster under the state
directory), PgBouncer, the migrations, Gunicorn, nginx, the exporters and
Prometheus through mirakuru executors (each waits for its readiness check),
writes `<state>/stack.env`, and stops them all, in reverse order, on SIGTERM.
`down` signals the supervisor and then makes sure every PID it recorded is
gone. Ports are SLUICE_PORT_BASE + a fixed offset, so stacks with different
bases run side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import select
import shlex
import shutil
import signal
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
    def pgdata(self) -> Path:
        return self.state / "pgdata"

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
            "PGBOUNCER_CONFIG_DIR": str(layout.rendered / "pgbouncer"),
            # Loopback-only cluster owned by this stack: trust, said plainly in
            # the README. The compose deployment uses scram-sha-256.
            "PGBOUNCER_AUTH_TYPE": "trust",
            "POSTGRES_LISTEN_ADDRESSES": "127.0.0.1",
            "POSTGRES_PORT": str(p["postgres"]),
            "POSTGRES_SOCKET_DIR": str(layout.state / "pgsocket"),
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
        (ROOT / "deploy" / "pgbouncer", layout.rendered / "pgbouncer"),
        (ROOT / "deploy" / "postgres", layout.rendered / "postgres"),
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


def _as_db_user(argv: list[str]) -> list[str]:
    """PostgreSQL and PgBouncer refuse to run as root: drop to the postgres user."""
    if os.geteuid() != 0:
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
        for sub in ("logs", "nginx-tmp", "pgsocket"):
            (layout.state / sub).mkdir(exist_ok=True)
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
        layout = self.layout
        socket_dir = layout.state / "pgsocket"
        if os.geteuid() == 0:
            shutil.chown(layout.state, DB_SERVICE_USER)
            reachable = subprocess.run(_as_db_user(["test", "-x", str(layout.state)]), check=False)
            if reachable.returncode != 0:
                raise StackError(
                    f"PostgreSQL runs as the {DB_SERVICE_USER} user, which cannot reach "
                    f"{layout.state}: a parent directory is not searchable by others. "
                    "Run `chmod o+x` on it, or set SLUICE_STATE_DIR to a path under a "
                    "searchable directory."
                )
            for path in (socket_dir, layout.rendered, layout.logs):
                for sub in [path, *path.rglob("*")]:
                    shutil.chown(sub, DB_SERVICE_USER)
        if (layout.pgdata / "PG_VERSION").exists():
            return
        layout.pgdata.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(layout.pgdata, DB_SERVICE_USER)
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
            stdout=self.log("initdb"),
            stderr=subprocess.STDOUT,
        )

    def start_postgres(self) -> None:
        conf = self.layout.rendered / "postgres" / "postgresql.conf"
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
        ini = self.layout.rendered / "pgbouncer" / "pgbouncer.ini"
        self.start(
            "pgbouncer",
            TCPExecutor(
                _as_db_user([_binary("pgbouncer"), str(ini)]),
                host="127.0.0.1",
                port=self.layout.ports["pgbouncer"],
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


def down(layout: Layout) -> int:
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
    print(f"Sluice stack down (state kept in {layout.state}; `make clean` removes it).")
    return 0


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
    parser.add_argument("command", choices=["up", "down", "status", "supervise"])
    parser.add_argument("--ready-fd", type=int)
    args = parser.parse_args(argv)
    layout = layout_from_env()
    try:
        if args.command == "supervise":
            return supervise(layout, args.ready_fd)
        return {"up": up, "down": down, "status": status}[args.command](layout)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
