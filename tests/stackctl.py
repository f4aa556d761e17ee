"""Local stacks for tests: in-process through `deploy.stack.Stack`, or the real CLI.

Most tests only need a running stack and get one from `local_stack`; the
tests of the launcher itself (`make up`, refusals at start-up) run
`python -m deploy.stack` through `launcher`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping

from deploy.layout import ROOT, Layout
from deploy.stack import RunningStack, Stack

# Added to every test stack's port base (and named in its state directory), so
# two test runs can share a machine: `TESTS_PORT_SHIFT=1000 pytest ...`.
PORT_SHIFT = int(os.environ.get("TESTS_PORT_SHIFT", "0"))
# The launcher's variables: a test stack is configured by its overrides alone.
_STACK_PREFIXES = (
    "SLUICE_",
    "NGINX_",
    "PGBOUNCER_",
    "POSTGRES_",
    "SMTP_",
    "EMAILS_",
    "FIRST_SUPERUSER",
)

__all__ = ["PORT_SHIFT", "ROOT", "RunningStack", "launcher", "local_stack", "run_gunicorn"]


@contextlib.contextmanager
def local_stack(name: str, port_base: int, **overrides: str) -> Iterator[RunningStack]:
    """A stack in `.sluice-test-<name>` on `port_base` (+ TESTS_PORT_SHIFT), stopped on exit.

    Configured from this process's environment without any stack variables,
    plus SLUICE_ENVIRONMENT=test and `overrides`. Processes a crashed earlier
    run left in the same state directory are stopped first (by recorded PID).
    """
    state = ROOT / (f".sluice-test-{name}" + (f"-{PORT_SHIFT}" if PORT_SHIFT else ""))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(_STACK_PREFIXES)}
    environ.update(SLUICE_ENVIRONMENT="test", **overrides)
    with Stack(Layout(state=state, port_base=port_base + PORT_SHIFT), environ=environ) as running:
        yield running


def _run(
    argv: list[str], env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def launcher(command: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m deploy.stack <command>` with this environment."""
    return _run([sys.executable, "-m", "deploy.stack", command], env, timeout=600)


def run_gunicorn(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Gunicorn with Sluice's config, as the image runs it: for configurations it must refuse."""
    argv = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "service.main:app"]
    return _run(argv, env, timeout=60)
