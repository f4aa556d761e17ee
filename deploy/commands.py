"""`make up|down|status|clean`: `python -m deploy up|down|status|clean [--all]`.

`up` refuses a configuration the settings object refuses, then starts the
supervisor in the background (deploy/supervisor.py) and waits for it on a
pipe; `down` signals the supervisor and makes sure every PID it recorded is
gone; `status` shows the recorded processes and what stack.env publishes;
`clean` stops a stack and removes its state and database directories.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from deploy import database, observability, pidfile
from deploy.envfile import read_env_file
from deploy.environment import stack_environment
from deploy.errors import StackError
from deploy.layout import DB_ROOT, ROOT, Layout, switches_user
from deploy.pidfile import SUPERVISOR_COMMAND
from deploy.services import START_TIMEOUT_S
from deploy.supervisor import wait_until_up


def up(layout: Layout) -> int:
    if pidfile.supervisor(layout) and layout.env_file.exists():
        print(f"Sluice stack already running (state {layout.state}).")
        return status(layout)
    pidfile.reap(layout)
    try:
        stack_environment(layout, os.environ)  # refuse bad settings before starting anything
    except ValueError as exc:
        raise StackError(f"configuration refused: {exc}") from exc
    layout.logs.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    with open(layout.log("supervisor"), "a") as log:
        proc = subprocess.Popen(
            [sys.executable, *SUPERVISOR_COMMAND.split(), "--ready-fd", str(write_fd)],
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
    # A service's preparation (initdb, migrations) and its start are each bounded.
    failure = wait_until_up(read_fd, silence_s=2 * START_TIMEOUT_S, on_started=_print_started)
    os.close(read_fd)
    if failure is not None:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
        print(f"Sluice stack failed to start: {failure}", file=sys.stderr)
        print(f"Logs: {layout.logs}", file=sys.stderr)
        return 1
    print(f"Sluice stack up in {time.monotonic() - started:.1f}s")
    print()
    return status(layout)


def _print_started(name: str, port: int | None, seconds: float) -> None:
    where = f"127.0.0.1:{port}" if port is not None else "-"
    print(f"{name:20} {where:16} ready in {seconds:.1f}s", flush=True)


def _stop(layout: Layout) -> None:
    supervisor = pidfile.supervisor(layout)
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
    """The supervisor, each recorded service and the URLs; exit 1 if a service exited.

    Every URL comes from the running stack's stack.env, whatever SLUICE_PORT_BASE
    this command was given: only the state directory says which stack it is.
    """
    supervisor = pidfile.supervisor(layout)
    if supervisor is None:
        print(f"Sluice stack not running (state {layout.state}).")
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
        print(f"{key:30} {published.get(key, '-')}")
    docs = f"{published['SLUICE_URL']}/docs" if "SLUICE_URL" in published else "-"
    print(f"{'docs':30} {docs}")
    print(f"{'logs':30} {layout.logs}")
    if layout.first_superuser_file.exists():
        print(f"{'first superuser':30} {layout.first_superuser_file}  (email and password)")
    if layout.db_dir != layout.state:
        print(f"{'database files':30} {layout.db_dir}  (PostgreSQL data, sockets, configs)")
    print(f"{'env':30} {layout.env_file}  (source it: . {layout.env_file})")
    if exited:
        print(f"exited: {', '.join(exited)} (see {layout.log('supervisor')}; `make down`)")
        return 1
    return 0


def _published(layout: Layout) -> dict[str, str]:
    try:
        return read_env_file(layout.env_file)
    except OSError:
        return {}
