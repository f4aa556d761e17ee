"""Another revision's stack beside the current code (`--baseline REV`, issue 21).

The revision is checked out as a git worktree under `.sluice-bench-rev/<short
sha>` (git-ignored; reused when it is there and at that commit), gets its own
virtualenv from its own lock file (`make install` there), and its stack is
started and stopped by its own launcher, on a port base and state directory
of its own:

    SLUICE_STATE_DIR=<state> SLUICE_PORT_BASE=<base> .venv/bin/python -m deploy.stack up|down

with the worktree as the working directory, so every process runs that
revision's code. What it publishes in `<state>/stack.env` (URL, database URL,
PIDs) is how the benchmark drives and measures it. `down` stops what `up`
started, and nothing else.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.targets import TargetError, clean_env, wait_for_ports
from deploy.envfile import read_env_file
from deploy.errors import tail
from deploy.layout import ROOT, Layout

WORKTREES = ROOT / ".sluice-bench-rev"
INSTALL_TIMEOUT_S = 1800
LAUNCH_TIMEOUT_S = 600
_MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


@dataclass(frozen=True)
class Revision:
    sha: str
    short: str
    path: Path  # its worktree

    @property
    def python(self) -> Path:
        return self.path / ".venv" / "bin" / "python"


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TargetError(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def resolve(rev: str, *, repo: Path = ROOT) -> tuple[str, str]:
    """(full sha, short sha) of a revision of the repository at `repo`."""
    sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}", cwd=repo)
    return sha, _git("rev-parse", "--short", sha, cwd=repo)


def checkout(
    rev: str,
    *,
    progress: Callable[[str], None],
    root: Path = WORKTREES,
    repo: Path = ROOT,
) -> Revision:
    """The revision's worktree under `root`, created if it is not there yet."""
    sha, short = resolve(rev, repo=repo)
    path = root / short
    if path.exists():
        head = _git("rev-parse", "HEAD", cwd=path)
        if head != sha:
            raise TargetError(f"{path} is at {head}, not {sha}: remove it (git worktree remove)")
        progress(f"baseline {short}: worktree {path} (reused)")
    else:
        root.mkdir(parents=True, exist_ok=True)
        _git("worktree", "add", "--detach", str(path), sha, cwd=repo)
        progress(f"baseline {short}: worktree {path} (created)")
    return Revision(sha=sha, short=short, path=path)


def install(revision: Revision, *, progress: Callable[[str], None]) -> None:
    """Its own virtualenv from its own lock file (`make install`: a no-op when up to date)."""
    log = revision.path.with_name(f"{revision.path.name}.install.log")
    progress(f"baseline {revision.short}: make install (log {log})")
    with open(log, "ab") as out:
        done = subprocess.run(
            ["make", "install"],
            cwd=revision.path,
            # Not the make that may have started the benchmark (`make bench`).
            env={k: v for k, v in clean_env().items() if k not in _MAKE_VARIABLES},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    if done.returncode != 0 or not revision.python.exists():
        raise TargetError(f"make install in {revision.path} failed:\n{tail(log)}")


def _launcher(revision: Revision, command: str, env: Mapping[str, str]) -> str:
    done = subprocess.run(
        [str(revision.python), "-m", "deploy.stack", command],
        cwd=revision.path,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise TargetError(
            f"{revision.short}: deploy.stack {command} failed ({done.returncode}):\n"
            f"{done.stdout}{done.stderr}"
        )
    return done.stdout


@contextlib.contextmanager
def revision_stack(
    revision: Revision,
    *,
    port_base: int,
    state: Path,
    settings: Mapping[str, str],
) -> Iterator[dict[str, str]]:
    """The revision's stack, up on `port_base` with `state`; yields its stack.env; down on exit.

    `settings` are the variables the current stack was given too (environment,
    PostgreSQL's max_connections, --sluice-set), so both run alike.
    """
    env = clean_env(
        **settings, SLUICE_STATE_DIR=str(state.resolve()), SLUICE_PORT_BASE=str(port_base)
    )
    env_file = state / "stack.env"
    if env_file.exists():
        raise TargetError(
            f"{state} holds a running stack (stack.env): `SLUICE_STATE_DIR={state} "
            f"{revision.python} -m deploy.stack down` in {revision.path} first"
        )
    wait_for_ports(Layout(state=state, port_base=port_base).ports.values())
    _launcher(revision, "up", env)
    try:
        yield read_env_file(env_file)
    finally:
        _launcher(revision, "down", env)
