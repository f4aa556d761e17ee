"""Break and repair a running stack's processes, by PID only.

The launcher's supervisor notices a dead PostgreSQL or PgBouncer but does not
restart it, so a test that stops one starts it again itself, with the exact
command line the launcher used (read from /proc before stopping), as the same
user. Such a process belongs to the test: `Restarted` keeps it and stops it
after the stack's own `down`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

DB_SERVICE_USER = "postgres"


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = ""
) -> float:
    """Seconds until `condition()` held; AssertionError after `timeout`."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def worker_pids(master_pid: int) -> list[int]:
    return sorted(p.pid for p in psutil.Process(master_pid).children() if p.is_running())


def uss_tree(pid: int) -> int:
    """Private memory (USS) of a process and all its descendants, in bytes.

    USS rather than RSS: PostgreSQL backends touching shared buffers grow
    their RSS without allocating anything.
    """
    total = 0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_full_info().uss
    return total


class Restarted:
    """Processes a test started in place of a stack's own; stopped at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, tuple[subprocess.Popen[bytes], signal.Signals]] = {}

    def stop_and_restart(
        self,
        name: str,
        pid: int,
        *,
        stop_signal: signal.Signals,
        down_for_s: float = 0.0,
        ready: Callable[[], bool],
    ) -> tuple[int, float]:
        """Stop `pid` with `stop_signal`, wait `down_for_s`, start the same command.

        Returns the new PID and the seconds the process was down (until `ready`).
        """
        cmdline = psutil.Process(pid).cmdline()
        os.kill(pid, stop_signal)
        wait_until(lambda: is_gone(pid), timeout=30, what=f"{name} ({pid}) to stop")
        stopped = time.monotonic()
        time.sleep(down_for_s)
        new = self.start(name, cmdline, stop_signal=stop_signal)
        wait_until(ready, timeout=60, what=f"{name} to accept connections again")
        return new, time.monotonic() - stopped

    def start(self, name: str, cmdline: list[str], *, stop_signal: signal.Signals) -> int:
        previous = self.procs.pop(name, None)
        if previous is not None:
            self._stop(*previous)
        argv = cmdline
        if os.geteuid() == 0:
            argv = [
                "setpriv",
                f"--reuid={DB_SERVICE_USER}",
                f"--regid={DB_SERVICE_USER}",
                "--init-groups",
                *cmdline,
            ]
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # A clean environment: not marked as one of the launcher's children.
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
            )
        self.procs[name] = (proc, stop_signal)
        return proc.pid

    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self.procs.values()]

    def stop_all(self) -> None:
        for proc, sig in self.procs.values():
            self._stop(proc, sig)
        self.procs.clear()

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
