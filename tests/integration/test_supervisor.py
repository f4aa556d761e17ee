"""`make up`'s supervisor: a service that dies is reported once, and `status` says so."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil

from deploy.envfile import read_env_file
from tests.stackctl import PORT_SHIFT, ROOT, clean_environ, launcher

STATE = ROOT / (".sluice-test-supervisor" + (f"-{PORT_SHIFT}" if PORT_SHIFT else ""))


def test_a_dead_service_is_reported_once_and_the_others_keep_serving() -> None:
    env = clean_environ(
        SLUICE_STATE_DIR=str(STATE),
        SLUICE_PORT_BASE=str(24700 + PORT_SHIFT),
        SLUICE_ENVIRONMENT="test",
    )
    up = launcher("up", env)
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
    try:
        published = read_env_file(STATE / "stack.env")
        pids = {
            key.removeprefix("SLUICE_PID_").lower(): int(value)
            for key, value in published.items()
            if key.startswith("SLUICE_PID_")
        }
        supervisor_log = STATE / "logs" / "supervisor.log"
        # The log is kept across runs: only this run's lines count.
        earlier = supervisor_log.stat().st_size if supervisor_log.exists() else 0
        os.kill(pids["nginx_exporter"], signal.SIGKILL)
        # The supervisor looks every second; give it several looks.
        time.sleep(4)
        with supervisor_log.open() as f:
            f.seek(earlier)
            log = f.read()
        assert log.count("nginx_exporter exited unexpectedly") == 1, log
        status = launcher("status", env)
        assert status.returncode == 1, status.stdout
        assert any(
            line.startswith("nginx_exporter") and "exited" in line
            for line in status.stdout.splitlines()
        ), status.stdout
        assert httpx.get(f"{published['SLUICE_URL']}/healthz", timeout=5).status_code == 200
    finally:
        down = launcher("down", env)
    assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
    assert not [name for name, pid in pids.items() if psutil.pid_exists(pid)]
