"""Watch a running stack's processes by PID: gone yet, workers, memory.

Stopping and starting a whole service goes through the stack itself
(`RunningStack.stop_service` / `start_service`); these helpers only observe.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import psutil


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
