"""`--one-core`: each deployment on one core, the generator on another.

Every process tree of a deployment (PostgreSQL and its backends, PgBouncer,
Gunicorn's master and workers, nginx's master and workers, the exporters and
Prometheus, the plain deployment's uvicorn tree) is pinned, every thread of
every process: `sched_setaffinity` on a PID sets only the thread with that
id, and Prometheus, the exporters and the app's workers run several threads.
A process or thread born later inherits its parent's affinity, so pinning
the parents (the postmaster, Gunicorn's master, uvicorn's) before the load
covers the backends and workers they start; the procedure re-applies the pins
before every run anyway, for trees started meanwhile (a restarted plain
deployment is a child of the generator's process, on the generator's core).

The settings do not change: the sizing reads `os.cpu_count()`, which does not
follow the affinity, and the stacks are configured before anything is pinned.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class CorePlan:
    """Which CPUs the servers and the generator may use."""

    servers: frozenset[int]
    generator: frozenset[int]

    def describe(self) -> str:
        return (
            f"one core: every deployment's processes on CPU {_cpus(self.servers)}, "
            f"the generator on CPU {_cpus(self.generator)}"
        )


def _cpus(cpus: Collection[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def plan_one_core(available: Collection[int]) -> CorePlan:
    """The servers on the lowest CPU this process may use, the generator on the next. Pure."""
    cpus = sorted(set(available))
    if len(cpus) < 2:
        raise ValueError(f"--one-core needs two CPUs to use, this process may use {cpus}")
    return CorePlan(servers=frozenset(cpus[:1]), generator=frozenset(cpus[1:2]))


def _pin_threads(proc: psutil.Process, cpus: frozenset[int]) -> int:
    """Pin every thread of `proc`; how many were pinned (0 if it is gone)."""
    pinned = 0
    with contextlib.suppress(psutil.Error):
        for thread in proc.threads():
            with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread ended
                os.sched_setaffinity(thread.id, cpus)
                pinned += 1
    return pinned


def pin_trees(roots: Iterable[int], cpus: frozenset[int]) -> tuple[int, int]:
    """Pin each root and everything below it to `cpus`: (processes, threads) pinned.

    Parents first, then their children are listed again until none appears
    that was not pinned: a child forked while its parent was being pinned
    may have inherited the old affinity.
    """
    done: set[int] = set()
    threads = 0
    for _ in range(5):
        found = []
        for pid in roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                found += [root, *root.children(recursive=True)]
        fresh = [proc for proc in found if proc.pid not in done]
        if not fresh:
            break
        for proc in fresh:
            threads += _pin_threads(proc, cpus)
            done.add(proc.pid)
    return len(done), threads


def pin_self(cpus: frozenset[int]) -> int:
    """Pin every thread of this process (the generator); threads started later inherit."""
    return _pin_threads(psutil.Process(), cpus)


def describe(found: dict[frozenset[int], int]) -> str:
    """ "CPU 0: 97 threads", one part per set of CPUs. Pure."""
    parts = [
        f"CPU {_cpus(cpus)}: {n} thread{'s' if n != 1 else ''}"
        for cpus, n in sorted(found.items(), key=lambda item: sorted(item[0]))
    ]
    return "; ".join(parts) or "no threads found"


def affinities(roots: Iterable[int], *, trees: bool = True) -> dict[frozenset[int], int]:
    """How many threads of these process trees (or, not `trees`, processes) may run
    on each set of CPUs.
    """
    found: dict[frozenset[int], int] = {}
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *(root.children(recursive=True) if trees else [])]:
                with contextlib.suppress(psutil.Error):
                    for thread in proc.threads():
                        with contextlib.suppress(OSError):
                            cpus = frozenset(os.sched_getaffinity(thread.id))
                            found[cpus] = found.get(cpus, 0) + 1
    return found
