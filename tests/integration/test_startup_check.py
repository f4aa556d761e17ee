"""An inconsistent configuration is refused before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.stackctl import ROOT


def test_launcher_refuses_inconsistent_limits(tmp_path: object) -> None:
    env = dict(
        os.environ,
        SLUICE_STATE_DIR=str(ROOT / ".sluice-test-refused"),
        SLUICE_PORT_BASE="24600",
        SLUICE_WORKERS="2",
        SLUICE_DB_POOL_SIZE="50",
    )
    result = subprocess.run(
        [sys.executable, "-m", "deploy.stack", "up"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "pool_size 50" in result.stderr and "max_client_conn" in result.stderr, result.stderr
    status = subprocess.run(
        [sys.executable, "-m", "deploy.stack", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "not running" in status.stdout


def test_gunicorn_refuses_inconsistent_limits() -> None:
    env = dict(os.environ, SLUICE_WORKERS="2", SLUICE_DB_POOL_SIZE="50", SLUICE_BIND_PORT="24690")
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "service.main:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "exceeds PgBouncer max_client_conn" in result.stderr
