"""An inconsistent configuration is refused before anything starts."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.stackctl import ROOT, launcher, run_gunicorn


def test_launcher_refuses_inconsistent_limits() -> None:
    env = dict(
        os.environ,
        SLUICE_STATE_DIR=str(ROOT / ".sluice-test-refused"),
        SLUICE_PORT_BASE="24600",
        SLUICE_WORKERS="2",
        SLUICE_DB_POOL_SIZE="50",
    )
    result = launcher("up", env)
    assert result.returncode != 0
    assert "pool_size 50" in result.stderr and "max_client_conn" in result.stderr, result.stderr
    status = launcher("status", env)
    assert "not running" in status.stdout


def test_gunicorn_refuses_inconsistent_limits() -> None:
    env = dict(os.environ, SLUICE_WORKERS="2", SLUICE_DB_POOL_SIZE="50", SLUICE_BIND_PORT="24690")
    result = run_gunicorn(env)
    assert result.returncode != 0
    assert "exceeds PgBouncer max_client_conn" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops to the postgres user")
def test_launcher_says_when_postgres_cannot_reach_the_state_directory() -> None:
    private = Path(tempfile.mkdtemp(prefix="sluice-private-"))  # mode 0700, owned by root
    try:
        env = dict(os.environ, SLUICE_STATE_DIR=str(private / "state"), SLUICE_PORT_BASE="24650")
        result = launcher("up", env)
        assert result.returncode != 0
        assert "cannot reach" in result.stderr and "chmod o+x" in result.stderr, result.stderr
        assert "not running" in launcher("status", env).stdout
    finally:
        launcher("down", env)
        shutil.rmtree(private, ignore_errors=True)
