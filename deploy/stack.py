"""The local stack: Sluice's whole request path from host binaries.

    with Stack(layout, environ=...) as running:   # in-process: tests, benchmark, `make up`
        running.url, running.database_url, running.pid("postgres"), ...

`Stack` renders the same config templates the containers use, starts
PostgreSQL (its own cluster in the database directory, deploy/database.py),
PgBouncer, the migrations, Gunicorn, nginx, the exporters and Prometheus
through mirakuru executors (deploy/services.py; each waits for its readiness
check), records their PIDs and yields a `RunningStack`; leaving the `with`
stops them all, in reverse order. Ports are SLUICE_PORT_BASE + the offsets in
deploy/layout.py, so stacks with different bases run side by side.

`make up|down|status|clean` are `python -m deploy ...` (deploy/commands.py),
whose background supervisor (deploy/supervisor.py) runs this same `Stack`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

from mirakuru.exceptions import ProcessFinishedWithError

from deploy import database, pidfile
from deploy.environment import render_configs, stack_environment
from deploy.errors import StackError, tail
from deploy.layout import Layout
from deploy.services import services
from service.env_names import has_settings_prefix


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
        """What stack.env publishes: URLs, ports, settings and PIDs, no secrets.

        Each name is a setting or listed in service/env_check.py, so a shell
        that sources stack.env passes the settings' check.
        """
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
            if has_settings_prefix(key) and not secret:
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

    def start_all(self, *, on_ready: Callable[[str, float], None] | None = None) -> None:
        """Prepare and start every service, in order, each waiting until it is ready.

        `on_ready(name, seconds)` after each; a failure names the service.
        """
        for service in self._services.values():
            began = time.monotonic()
            if service.prepare is not None:
                try:
                    service.prepare()
                except Exception as exc:
                    raise StackError(f"{service.name} could not start: {exc}") from exc
            self.start_service(service.name)
            if on_ready is not None:
                on_ready(service.name, time.monotonic() - began)

    def stop_all(self) -> None:
        """Stop every started service in reverse order, forget their PIDs, close the logs."""
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
        log = open(self.layout.log(name), "a", buffering=1)  # noqa: SIM115 - closed by stop_all
        self._logs.append(log)
        return log


class Stack:
    """A local stack as a context manager: `with Stack(layout) as running: ...`.

    `environ` is the environment the stack is configured from, and the only
    one (deploy/environment.py); an inconsistent configuration raises
    ValueError here, before anything starts. `on_ready(name, seconds)` is
    called as each service becomes ready. Entering stops what an earlier owner of the same state
    directory left running (by recorded PID), then starts every service;
    leaving stops them in reverse order and closes their logs.
    """

    def __init__(
        self,
        layout: Layout,
        *,
        environ: Mapping[str, str],
        on_ready: Callable[[str, float], None] | None = None,
    ) -> None:
        self.layout = layout
        self.environment = stack_environment(layout, environ)
        self._on_ready = on_ready
        self._running: RunningStack | None = None

    def __enter__(self) -> RunningStack:
        layout = self.layout
        owner = pidfile.supervisor(layout)
        if owner is not None and owner.pid != os.getpid():
            raise StackError(
                f"{layout.state} is the stack of supervisor {owner.pid}: "
                f"`SLUICE_STATE_DIR={layout.state} python -m deploy down` first"
            )
        for directory in (layout.state, layout.logs, layout.nginx_tmp):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        pidfile.reap(layout)
        database.prepare_db_dir(layout)
        render_configs(layout, self.environment)
        running = RunningStack(layout, self.environment)
        self._running = running
        try:
            running.start_all(on_ready=self._on_ready)
        except BaseException:
            running.stop_all()
            raise
        return running

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._running is not None:
            self._running.stop_all()
            self._running = None
