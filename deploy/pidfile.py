"""The PIDs a stack started, recorded with their start times.

`<state>/pids` has one line per service: name, PID and the process's create
time, so a PID the kernel has since reused is never mistaken for ours.
`down`, `clean`, `status` and the next start read it; nothing else is used to
find a stack's processes. `<state>/supervisor.pid` is `make up`'s supervisor,
recognised by its command line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import psutil

from deploy.layout import Layout

# How deploy/commands.py starts the supervisor: `python -m deploy supervise ...`.
SUPERVISOR_COMMAND = "-m deploy supervise"


def record(layout: Layout, pids: Mapping[str, int]) -> None:
    lines = []
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            lines.append(f"{name} {pid} {psutil.Process(pid).create_time()}")
    layout.pids_file.write_text("\n".join(lines) + "\n")


def recorded(layout: Layout) -> list[tuple[str, int, psutil.Process | None]]:
    """(name, pid, process) of every recorded service; process None once it is gone."""
    found: list[tuple[str, int, psutil.Process | None]] = []
    try:
        lines = layout.pids_file.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        if not line.strip():
            continue
        name, pid, created = line.split()
        try:
            proc: psutil.Process | None = psutil.Process(int(pid))
            if proc is not None and (
                abs(proc.create_time() - float(created)) >= 0.01
                or proc.status() == psutil.STATUS_ZOMBIE
            ):
                proc = None
        except psutil.Error:
            proc = None
        found.append((name, int(pid), proc))
    return found


def alive(layout: Layout) -> list[tuple[str, psutil.Process]]:
    """Recorded processes that are still the same, running processes."""
    return [(name, proc) for name, _, proc in recorded(layout) if proc is not None]


def reap(layout: Layout) -> None:
    """Stop the recorded processes a dead owner left behind (by recorded PID only)."""
    procs = [proc for _, proc in alive(layout)]
    for proc in list(procs):
        with contextlib.suppress(psutil.Error):
            procs.extend(proc.children(recursive=True))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, still = psutil.wait_procs(procs, timeout=15)
    for proc in still:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    layout.pids_file.unlink(missing_ok=True)


def supervisor(layout: Layout) -> psutil.Process | None:
    """The running supervisor of `make up` for this state directory, if there is one."""
    try:
        pid = int(layout.supervisor_pid.read_text())
        proc = psutil.Process(pid)
    except (OSError, ValueError, psutil.Error):
        return None
    with contextlib.suppress(psutil.Error):
        if proc.is_running() and SUPERVISOR_COMMAND in " ".join(proc.cmdline()):
            return proc
    return None
