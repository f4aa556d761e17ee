"""--baseline's worktree of a fixed revision, in a git repository of the test's own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.revision import checkout, resolve
from bench.targets import TargetError


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with two commits, `first` tagged."""
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q")
    for name in ("first", "second"):
        (path / "file").write_text(name)
        _git(path, "add", "file")
        _git(path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", name)
        _git(path, "tag", name)
    return path


def test_a_revision_is_checked_out_once_and_reused(repo: Path, tmp_path: Path) -> None:
    said: list[str] = []
    root = tmp_path / "repo" / ".sluice-bench-rev"
    sha, short = resolve("first", repo=repo)
    revision = checkout("first", progress=said.append, root=root, repo=repo)
    assert (revision.sha, revision.short, revision.path) == (sha, short, root / short)
    assert (revision.path / "file").read_text() == "first"  # that commit's files
    assert _git(revision.path, "rev-parse", "HEAD") == sha
    assert revision.python == revision.path / ".venv" / "bin" / "python"
    again = checkout(sha, progress=said.append, root=root, repo=repo)
    assert again == revision
    assert [line.rsplit(" ", 1)[-1] for line in said] == ["(created)", "(reused)"]


def test_a_worktree_at_another_commit_is_refused(repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "worktrees"
    revision = checkout("first", progress=lambda _: None, root=root, repo=repo)
    _git(revision.path, "checkout", "-q", "second")
    with pytest.raises(TargetError, match="is at"):
        checkout("first", progress=lambda _: None, root=root, repo=repo)
    with pytest.raises(TargetError, match="rev-parse"):
        resolve("no-such-revision", repo=repo)
