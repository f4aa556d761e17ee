"""The local stack: Sluice's whole request path from host binaries.

    with Stack(layout, environ=...) as running:   # in-process: tests, benchmark
        running.url, running.database_url, running.pid("postgres"), ...

    python -m deploy.stack up | down | status | clean [--all]   # make up|down|status|clean

`Stack` renders the same config templates the containers use, starts
PostgreSQL (its own cluster in the database directory, deploy/database.py),
PgBouncer, the migrations, Gunicorn, nginx, the exporters and Prometheus
through mirakuru executors (deploy/services.py; each waits for its readiness
check), records their PIDs and yields a `RunningStack`; leaving the `with`
stops them all, in reverse order. Ports are SLUICE_PORT_BASE + the offsets in
deploy/layout.py, so stacks with different bases run side by side.

`up` starts a supervisor in the background (`supervise`), which does
`with Stack(layout) as running`, writes `<state>/stack.env` and waits for
SIGTERM. It restarts nothing: a service that exits on its own is reported
once in logs/supervisor.log, the others keep running, and `status` lists it
as exited (exit status 1) until `down`. `down` signals the supervisor and
then makes sure every PID it recorded is gone; `clean` stops the stack and
removes its state.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil
from mirakuru.exceptions import ProcessFinishedWithError

from deploy import database, observability, pidfile
from deploy.envfile import read_env_file, write_env_file
from deploy.environment import render_configs, stack_environment
from deploy.errors import StackError
from deploy.layout import DB_ROOT, ROOT, Layout, layout_from_env, switches_user
from deploy.services import START_TIMEOUT_S, services, tail

# What stack.env publishes of the environment (secrets and passwords never).
_PUBLISHED_PREFIXES = ("SLUICE_", "NGINX_", "PGBOUNCER_", "POSTGRES_", "SMTP_", "EMAILS_")


class RunningStack:
    """A started stack: where it is, its processes, and start/stop of each service."""

    def __init__(self, layout: Layout, environment: Mapping[str, str]) -> None:
        self.layout = layout
        self.environment = dict(environment)
        self._logs: list[IO[str]] = []
        try:
            self._services = {s.name: s for s in services(layout, environment, log=self._open_log)}
        except BaseException:
            self._close_logs()
            raise
        self._started: list[str] = []
        self._stopped: set[str] = set()  # stopped on purpose: not "exited"

    # --- where it is

    @property
    def state(self) -> Path:
        return self.layout.state

    @property
    def port_base(self) -> int:
        return self.layout.port_base

    @property
    def ports(self) -> dict[str, int]:
        return self.layout.ports

    @property
    def url(self) -> str:
        return self.layout.url("nginx")

    @property
    def database_url(self) -> str:
        """Straight to PostgreSQL, as its superuser (for checks beside the app)."""
        return self.env["SLUICE_DATABASE_URL"]

    @property
    def env(self) -> dict[str, str]:
        """What stack.env publishes: URLs, ports, settings and PIDs, no secrets."""
        p, env = self.layout.ports, self.environment
        values = {
            "SLUICE_URL": self.layout.url("nginx"),
            "SLUICE_APP_URL": self.layout.url("gunicorn"),
            "SLUICE_METRICS_URL": self.layout.url("metrics", "/metrics"),
            "SLUICE_NGINX_STATUS_URL": self.layout.url("nginx_status", "/stub_status"),
            "SLUICE_DATABASE_URL": (
                f"postgresql://postgres@127.0.0.1:{p['postgres']}/{env['SLUICE_DB_NAME']}"
            ),
            "SLUICE_PGBOUNCER_URL": (
                f"postgresql://{env['SLUICE_DB_USER']}@127.0.0.1:{p['pgbouncer']}/"
                f"{env['SLUICE_DB_NAME']}"
            ),
            "SLUICE_PROMETHEUS_URL": self.layout.url("prometheus"),
            "SLUICE_SMTP_URL": f"smtp://127.0.0.1:{p['smtp']}",
            "SLUICE_MAILBOX_URL": self.layout.mail_dir.as_uri(),
            "SLUICE_STATE_DIR": str(self.layout.state),
            "SLUICE_PORT_BASE": str(self.layout.port_base),
            "SLUICE_SUPERVISOR_PID": str(os.getpid()),
        }
        values.update({f"SLUICE_PID_{name.upper()}": str(pid) for name, pid in self.pids.items()})
        for key, value in env.items():
            secret = "PASSWORD" in key or "SECRET" in key
            if key.startswith(_PUBLISHED_PREFIXES) and not secret:
                values.setdefault(key, value)
        return values

    @property
    def pids(self) -> dict[str, int]:
        """PID of each started service (the last one started, after a restart)."""
        return {
            name: process.pid
            for name in self._started
            if (process := self._services[name].executor.process) is not None
        }

    def pid(self, name: str) -> int:
        return self.pids[name]

    def log(self, name: str, lines: int = 40) -> str:
        return tail(self.layout.log(name), lines)

    # --- its processes

    def start_service(self, name: str) -> None:
        """Start `name` (again) with its command and wait until it is ready."""
        service = self._services[name]
        try:
            service.executor.start()
            if service.ready is not None:
                service.ready()
        except Exception as exc:
            raise StackError(
                f"{name} did not become ready: {exc}\n"
                f"--- last lines of {self.layout.log(name)} ---\n{tail(self.layout.log(name))}"
            ) from exc
        if name not in self._started:
            self._started.append(name)
        self._stopped.discard(name)
        pidfile.record(self.layout, self.pids)

    def stop_service(self, name: str, *, sig: signal.Signals | None = None) -> None:
        """Stop `name` with `sig` (default: its own stop signal) and wait until it exited."""
        self._stopped.add(name)
        # Stopped on purpose: whatever status it exits with.
        with contextlib.suppress(ProcessFinishedWithError):
            self._services[name].executor.stop(stop_signal=sig)

    def exited(self) -> dict[str, int]:
        """Services that exited without being stopped, with their exit status."""
        found = {}
        for name in self._started:
            process = self._services[name].executor.process
            if name not in self._stopped and process is not None and process.poll() is not None:
                found[name] = process.returncode
        return found

    def _start_all(self) -> None:
        for service in self._services.values():
            if service.prepare is not None:
                service.prepare()
            self.start_service(service.name)

    def _stop_all(self) -> None:
        for name in reversed(self._started):
            try:
                self.stop_service(name)
            except Exception as exc:  # keep stopping the others
                print(f"stopping {name}: {exc}", file=sys.stderr)
        self._started.clear()
        self.layout.pids_file.unlink(missing_ok=True)
        self._close_logs()

    def _close_logs(self) -> None:
        for log in self._logs:
            log.close()
        self._logs.clear()

    def _open_log(self, name: str) -> IO[str]:
        log = open(self.layout.log(name), "a", buffering=1)  # noqa: SIM115 - closed by _stop_all
        self._logs.append(log)
        return log


class Stack:
    """A local stack as a context manager: `with Stack(layout) as running: ...`.

    `environ` is the environment the stack is configured from (default: this
    process's); an inconsistent configuration raises ValueError here, before
    anything starts. Entering stops what an earlier owner of the same state
    directory left running (by recorded PID), then starts every service;
    leaving stops them in reverse order and closes their logs.
    """

    def __init__(self, layout: Layout, *, environ: Mapping[str, str] | None = None) -> None:
        self.layout = layout
        self.environment = stack_environment(layout, environ)
        self._running: RunningStack | None = None

    def __enter__(self) -> RunningStack:
        layout = self.layout
        owner = _supervisor_alive(layout)
        if owner is not None and owner.pid != os.getpid():
            raise StackError(
                f"{layout.state} is the stack of supervisor {owner.pid}: "
                f"`SLUICE_STATE_DIR={layout.state} python -m deploy.stack down` first"
            )
        for directory in (layout.state, layout.logs, layout.nginx_tmp):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        pidfile.reap(layout)
        database.prepare_db_dir(layout)
        render_configs(layout, self.environment)
        running = RunningStack(layout, self.environment)
        self._running = running
        try:
            running._start_all()
        except BaseException:
            running._stop_all()
            raise
        return running

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._running is not None:
            self._running._stop_all()
            self._running = None


# --------------------------------------------------------------------------
# Commands


def supervise(layout: Layout, ready_fd: int) -> int:
    """In the background: run the stack, publish stack.env, report, wait for SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    layout.state.mkdir(parents=True, exist_ok=True)
    layout.supervisor_pid.write_text(f"{os.getpid()}\n")
    ready = os.fdopen(ready_fd, "w")
    try:
        with Stack(layout) as running:
            write_env_file(layout.env_file, running.env)
            ready.write("READY\n")
            ready.close()
            reported: set[str] = set()
            while not stop.wait(1.0):
                for name, code in running.exited().items():
                    if name not in reported:
                        reported.add(name)
                        print(
                            f"{name} exited unexpectedly (status {code}); not restarted, "
                            "the others keep running; `make down` stops them",
                            file=sys.stderr,
                            flush=True,
                        )
        return 0
    except Exception as exc:
        if not ready.closed:
            ready.write(f"FAILED {exc}\n")
            ready.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        layout.supervisor_pid.unlink(missing_ok=True)
        layout.env_file.unlink(missing_ok=True)


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
    pidfile.reap(layout)
    try:
        stack_environment(layout)  # refuse inconsistent settings before starting anything
    except ValueError as exc:
        raise StackError(f"configuration refused: {exc}") from exc
    layout.logs.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    with open(layout.log("supervisor"), "a") as log:
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


def _stop(layout: Layout) -> None:
    supervisor = _supervisor_alive(layout)
    if supervisor is not None:
        supervisor.terminate()
        try:
            supervisor.wait(timeout=120)
        except psutil.TimeoutExpired:
            supervisor.kill()
    pidfile.reap(layout)
    layout.supervisor_pid.unlink(missing_ok=True)
    layout.env_file.unlink(missing_ok=True)


def down(layout: Layout) -> int:
    _stop(layout)
    kept = layout.state if layout.db_dir == layout.state else f"{layout.state} and {layout.db_dir}"
    print(f"Sluice stack down (state kept in {kept}; `make clean` removes it).")
    return 0


def clean(layout: Layout, *, everything: bool = False) -> int:
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
    dirs = [d for d in dict.fromkeys((layout.state, layout.db_dir, layout.nginx_tmp)) if d.is_dir()]
    dirs = [d for d in dirs if not d.is_symlink()]
    if not dirs:
        return True
    _stop(layout)
    running = [proc.pid for _, proc in pidfile.alive(layout)]
    running += [
        proc.pid
        for pgdata in {layout.pgdata, layout.state / "pgdata"}
        if (proc := database.postmaster(pgdata)) is not None
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
    if not switches_user() or not DB_ROOT.is_dir():
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
    """The supervisor, each recorded service and the URLs; exit 1 if a service exited."""
    supervisor = _supervisor_alive(layout)
    if supervisor is None:
        print(f"Sluice stack not running (port base {layout.port_base}).")
        return 3
    print(f"supervisor  pid {supervisor.pid}")
    exited = []
    for name, pid, proc in pidfile.recorded(layout):
        print(f"{name:20} pid {pid:<8} {'running' if proc is not None else 'exited'}")
        if proc is None:
            exited.append(name)
    print()
    published = _published(layout)
    for key in (
        "SLUICE_URL",
        "SLUICE_METRICS_URL",
        "SLUICE_PROMETHEUS_URL",
        "SLUICE_SMTP_URL",
        "SLUICE_MAILBOX_URL",
        *observability.URL_KEYS,
        "SLUICE_DATABASE_URL",
        "SLUICE_PGBOUNCER_URL",
    ):
        print(f"{key:24} {published.get(key, '-')}")
    print(f"{'docs':24} {layout.url('nginx', '/docs')}")
    print(f"{'logs':24} {layout.logs}")
    if layout.first_superuser_file.exists():
        print(f"{'first superuser':24} {layout.first_superuser_file}  (email and password)")
    if layout.db_dir != layout.state:
        print(f"{'database files':24} {layout.db_dir}  (PostgreSQL data, sockets, configs)")
    print(f"{'env':24} {layout.env_file}  (source it: . {layout.env_file})")
    if exited:
        print(f"exited: {', '.join(exited)} (see {layout.log('supervisor')}; `make down`)")
        return 1
    return 0


def _published(layout: Layout) -> dict[str, str]:
    try:
        return read_env_file(layout.env_file)
    except OSError:
        return {}


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
