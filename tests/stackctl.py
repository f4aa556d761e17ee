"""Start and stop local stacks for tests, through the launcher itself."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Added to every test stack's port base (and named in its state directory), so
# two test runs can share a machine: `TESTS_PORT_SHIFT=1000 pytest ...`.
PORT_SHIFT = int(os.environ.get("TESTS_PORT_SHIFT", "0"))


@dataclass
class RunningStack:
    state: Path
    port_base: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.env["SLUICE_URL"]

    @property
    def database_url(self) -> str:
        return self.env["SLUICE_DATABASE_URL"]

    def log(self, name: str, lines: int = 40) -> str:
        path = self.state / "logs" / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no {path})"

    def pid(self, name: str) -> int:
        return int(self.env[f"SLUICE_PID_{name.upper()}"])


def _run(
    argv: list[str], env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def launcher(command: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m deploy.stack <command>` with this environment."""
    return _run([sys.executable, "-m", "deploy.stack", command], env, timeout=600)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = shlex.split(value)[0] if value else ""
    return values


def start_stack(name: str, port_base: int, **overrides: str) -> RunningStack:
    port_base += PORT_SHIFT
    state = ROOT / (f".sluice-test-{name}" + (f"-{PORT_SHIFT}" if PORT_SHIFT else ""))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SLUICE_", "NGINX_", "PGBOUNCER_", "POSTGRES_"))
    }
    env.update(
        SLUICE_STATE_DIR=str(state),
        SLUICE_PORT_BASE=str(port_base),
        SLUICE_ENVIRONMENT="test",
        **overrides,
    )
    launcher("down", env)  # a stack left by an interrupted run
    result = launcher("up", env)
    if result.returncode != 0:
        raise RuntimeError(f"stack {name} failed to start:\n{result.stdout}\n{result.stderr}")
    return RunningStack(state=state, port_base=port_base, env=read_env_file(state / "stack.env"))


def stop_stack(stack: RunningStack) -> None:
    env = dict(os.environ, SLUICE_STATE_DIR=str(stack.state), SLUICE_PORT_BASE=str(stack.port_base))
    result = launcher("down", env)
    if result.returncode != 0:
        raise RuntimeError(f"stack down failed:\n{result.stdout}\n{result.stderr}")


def run_gunicorn(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Gunicorn with Sluice's config, as the image runs it: for configurations it must refuse."""
    argv = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "service.main:app"]
    return _run(argv, env, timeout=60)
