"""--one-core's pinning, on real processes: every thread of a tree, and what it starts later."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from bench.affinity import affinities, pin_trees

# A parent with a second thread and a child, which starts another child on request.
_TREE = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("ready", flush=True)
sys.stdin.readline()
later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(later.pid, flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[str]]:
    """A small process tree of our own, killed (all of it) at the end."""
    with subprocess.Popen(
        [sys.executable, "-c", _TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            yield proc
        finally:
            children = psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            proc.wait(timeout=10)
            for child in children:
                child.kill()
            psutil.wait_procs(children, timeout=10)


def test_every_thread_of_the_tree_is_pinned_and_later_children_inherit(
    tree: subprocess.Popen[str],
) -> None:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to tell a pinned thread from an unpinned one")
    one = frozenset({min(cpus)})
    assert set(affinities([tree.pid])) == {frozenset(cpus)}  # not pinned yet
    processes, threads = pin_trees([tree.pid], one)
    assert processes == 2
    assert threads >= 3  # the parent's two threads and the child's
    assert affinities([tree.pid]) == {one: threads}
    # A process the pinned parent starts afterwards is born on the same core.
    assert tree.stdin is not None and tree.stdout is not None
    tree.stdin.write("\n")
    tree.stdin.flush()
    later = int(tree.stdout.readline())
    assert os.sched_getaffinity(later) == one
    assert set(affinities([tree.pid])) == {one}


def test_a_tree_that_is_gone_pins_nothing() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    assert pin_trees([proc.pid], frozenset({0})) == (0, 0)
