"""The processes the benchmark drives: Sluice's local stack, the plain deployment,
and a trivial nginx target for calibrating the generator. Each is a context
manager that stops exactly the processes it started, by PID.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from deploy.environment import without_settings
from deploy.errors import StackError, tail
from deploy.layout import ROOT, Layout
from deploy.stack import RunningStack, Stack


class TargetError(RuntimeError):
    pass


@dataclass
class Deployment:
    """One way of serving the app: its URL, the process trees whose memory counts,
    and where it records each request (bench.serverside), if it does.
    """

    name: str
    url: str
    rss_roots: dict[str, list[int]] = field(default_factory=dict)
    access_log: Path | None = None  # nginx's JSON access log
    metrics_url: str | None = None  # the app's Prometheus metrics (sluice_shed_total)
    # Start the server afresh (None: not supported); used when it does not recover.
    restart: Callable[[], None] | None = None
    # Its other process trees, not measured (exporters, Prometheus): pinned with --one-core.
    other_roots: list[int] = field(default_factory=list)

    @property
    def roots(self) -> list[int]:
        """Every process tree the deployment runs (for --one-core)."""
        measured = {pid for pids in self.rss_roots.values() for pid in pids}
        return sorted(measured | set(self.other_roots))


def wait_http(url: str, *, timeout_s: float, expect: int = 200) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == expect:
                    return
                last = f"status {response.status}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TargetError(f"{url} not answering {expect} after {timeout_s:.0f}s: {last}")


def wait_for_ports(ports: Iterable[int], *, timeout_s: float = 90.0) -> None:
    """Wait until every one of `ports` can be bound on 127.0.0.1, before a server binds it.

    A port in Linux's ephemeral range (32768-60999) may be held for a minute
    by a TIME-WAIT connection of any process on the machine (nginx's
    connection per request to an app leaves thousands), and a server that
    binds it then exits with EADDRINUSE.
    """
    wanted = sorted(set(ports))
    deadline = time.monotonic() + timeout_s
    while busy := [port for port in wanted if not _bindable(port)]:
        if time.monotonic() > deadline:
            raise TargetError(f"127.0.0.1 ports {busy} still in use after {timeout_s:g} s")
        time.sleep(1.0)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:  # no SO_REUSEADDR: a TIME-WAIT holder counts as busy
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any stack settings, plus `overrides`."""
    return without_settings(os.environ) | overrides


def stop_process_tree(proc: subprocess.Popen[bytes], *, timeout_s: float = 20) -> None:
    """SIGTERM the process we started, then make sure its children are gone too."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


# --------------------------------------------------------------------------
# Sluice: the whole local stack, in-process (deploy.stack.Stack)


def sluice_deployment(env: Mapping[str, str], *, name: str = "sluice") -> Deployment:
    """A running stack as a benchmark target, from what it publishes (`RunningStack.env`,
    or another checkout's `stack.env`): where it answers, what it records, its PIDs.
    """
    pids = {
        key.removeprefix("SLUICE_PID_").lower(): int(value)
        for key, value in env.items()
        if key.startswith("SLUICE_PID_")
    }
    measured = ("gunicorn", "nginx", "pgbouncer", "postgres")
    others = [pid for service, pid in pids.items() if service not in measured]
    # Another checkout's supervisor is the parent of all of them (ours is this process).
    supervisor = int(env.get("SLUICE_SUPERVISOR_PID", os.getpid()))
    if supervisor != os.getpid():
        others.append(supervisor)
    return Deployment(
        name=name,
        url=env["SLUICE_URL"],
        rss_roots={
            "app": [pids["gunicorn"]],
            "proxies": [pids["nginx"], pids["pgbouncer"]],
            "postgres": [pids["postgres"]],
        },
        access_log=Path(env["SLUICE_STATE_DIR"]) / "logs" / "access.log",
        metrics_url=env["SLUICE_METRICS_URL"],
        other_roots=others,
    )


@contextlib.contextmanager
def sluice_stack(
    *,
    port_base: int,
    state: Path,
    postgres_max_connections: int,
    overrides: Mapping[str, str] | None = None,
) -> Iterator[RunningStack]:
    """The local stack on its own port base and state, stopped on exit.

    PostgreSQL's max_connections is raised so the plain deployment's default
    pools (workers x (5 + 10)) fit beside PgBouncer's; Sluice itself only ever
    uses PgBouncer's pool, so its behaviour does not change.
    """
    environ = clean_env(
        SLUICE_ENVIRONMENT="test",
        POSTGRES_MAX_CONNECTIONS=str(postgres_max_connections),
    )
    environ.update(overrides or {})
    layout = Layout(state=state.resolve(), port_base=port_base)
    wait_for_ports(layout.ports.values())
    with contextlib.ExitStack() as resources:
        try:
            running = resources.enter_context(Stack(layout, environ=environ))
        except (StackError, ValueError) as exc:
            raise TargetError(f"Sluice stack failed to start: {exc}\nlogs: {layout.logs}") from exc
        yield running


# --------------------------------------------------------------------------
# The plain deployment: uvicorn --workers N straight to PostgreSQL


def plain_environment(
    *, postgres_port: int, db_user: str, db_password: str, db_name: str
) -> dict[str, str]:
    """How most projects ship it: library defaults, no admission control, no PgBouncer."""
    return clean_env(
        SLUICE_ENVIRONMENT="test",
        SLUICE_ADMISSION_ENABLED="false",
        SLUICE_ENFORCE_LIMITS="false",
        # SQLAlchemy's default pool; with admission off the threadpool is
        # anyio's default of 40 threads (service/main.py).
        SLUICE_MAX_IN_FLIGHT="5",
        SLUICE_DB_MAX_OVERFLOW="10",
        SLUICE_DB_POOL_TIMEOUT_S="30",
        SLUICE_DB_HOST="127.0.0.1",
        SLUICE_DB_PORT=str(postgres_port),
        SLUICE_DB_USER=db_user,
        SLUICE_DB_PASSWORD=db_password,
        SLUICE_DB_NAME=db_name,
    )


@contextlib.contextmanager
def plain_server(
    *, port: int, workers: int, env: Mapping[str, str], log: Path, postgres_pid: int | None = None
) -> Iterator[Deployment]:
    """`uvicorn --workers N` on 127.0.0.1:port; `restart()` replaces the process tree."""
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
        "service.main:app",
    ]
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    current: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        wait_for_ports([port])
        with open(log, "ab") as out:
            current.append(
                subprocess.Popen(
                    argv, cwd=ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT
                )
            )
        deployment.rss_roots["app"] = [current[-1].pid]
        try:
            wait_http(f"{url}/healthz", timeout_s=60)
        except TargetError as exc:
            raise TargetError(f"{exc}\n--- {log} ---\n{tail(log)}") from exc

    def restart() -> None:
        stop_process_tree(current.pop())
        start()

    deployment = Deployment(name="plain", url=url, restart=restart)
    if postgres_pid is not None:
        deployment.rss_roots["postgres"] = [postgres_pid]
    try:
        start()
        yield deployment
    finally:
        for proc in current:
            stop_process_tree(proc)


# --------------------------------------------------------------------------
# The trivial target: nginx answering a constant 200, for calibration

_TRIVIAL_NGINX = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{{"data":[],"count":0}}';
        }}
    }}
}}
"""


@contextlib.contextmanager
def trivial_nginx(*, port: int) -> Iterator[Deployment]:
    """One nginx process (no master) serving a constant JSON body on 127.0.0.1."""
    with tempfile.TemporaryDirectory(prefix="sluice-bench-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(_TRIVIAL_NGINX.format(dir=tmp, port=port))
        wait_for_ports([port])
        proc = subprocess.Popen(
            ["nginx", "-e", f"{tmp}/error.log", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_http(f"{url}/", timeout_s=15)
            except TargetError as exc:
                raise TargetError(f"{exc}\n{tail(Path(tmp) / 'error.log')}") from exc
            yield Deployment(name="trivial", url=url, rss_roots={"app": [proc.pid]})
        finally:
            stop_process_tree(proc)


# --------------------------------------------------------------------------
# Memory: peak RSS of each process tree, sampled in a thread


class RssSampler:
    """Samples each named group of process trees: peak summed RSS, and CPU used meanwhile."""

    def __init__(self, roots: Mapping[str, list[int]], *, interval_s: float = 0.25) -> None:
        self._roots = {name: [psutil.Process(pid) for pid in pids] for name, pids in roots.items()}
        self._interval = interval_s
        self.peak_mb: dict[str, float] = dict.fromkeys(roots, 0.0)
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._members: dict[str, set[int]] = {name: set() for name in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self, *, first: bool = False) -> None:
        for name, roots in self._roots.items():
            total = 0
            for root in roots:
                with contextlib.suppress(psutil.Error):
                    for proc in [root, *root.children(recursive=True)]:
                        with contextlib.suppress(psutil.Error):
                            with proc.oneshot():
                                total += proc.memory_info().rss
                                times = proc.cpu_times()
                            cpu = times.user + times.system
                            if first:
                                self._cpu_first[proc.pid] = cpu
                            self._cpu_last[proc.pid] = cpu
                            self._members[name].add(proc.pid)
            self.peak_mb[name] = max(self.peak_mb[name], total / 2**20)

    @property
    def cpu_s(self) -> dict[str, float]:
        """CPU seconds each group used since the start (processes born meanwhile count whole)."""
        return {
            name: sum(self._cpu_last[pid] - self._cpu_first.get(pid, 0.0) for pid in pids)
            for name, pids in self._members.items()
        }

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
