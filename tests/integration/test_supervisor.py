"""`make up`'s supervisor: each service reported as it becomes ready, a service that
dies reported once, a failure named with its log; `status` from stack.env alone."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import httpx
import psutil

from deploy.envfile import read_env_file
from deploy.layout import PORTS
from tests.stackctl import PORT_SHIFT, ROOT, clean_environ, launcher

STATE = ROOT / (".sluice-test-supervisor" + (f"-{PORT_SHIFT}" if PORT_SHIFT else ""))
FAILING_STATE = ROOT / (".sluice-test-start-failure" + (f"-{PORT_SHIFT}" if PORT_SHIFT else ""))


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
        base = int(published["SLUICE_PORT_BASE"])
        # `up` said, as each became ready, where it listens and how long it took.
        for name in pids:
            port = base + PORTS[name]
            assert re.search(
                rf"^{name} +127\.0\.0\.1:{port} +ready in \d+\.\ds$", up.stdout, re.M
            ), up.stdout
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
        # Without the port base: every address still the running stack's (stack.env).
        without_base = {k: v for k, v in env.items() if k != "SLUICE_PORT_BASE"}
        shown = launcher("status", without_base).stdout
        ports = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", shown)}
        assert ports and all(base <= port < base + len(PORTS) for port in ports), shown
        assert f"{published['SLUICE_URL']}/docs" in shown, shown
    finally:
        down = launcher("down", env)
    assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
    assert not [name for name, pid in pids.items() if psutil.pid_exists(pid)]


def test_a_service_that_cannot_start_is_named_with_the_end_of_its_log() -> None:
    env = clean_environ(
        SLUICE_STATE_DIR=str(FAILING_STATE),
        SLUICE_PORT_BASE=str(24760 + PORT_SHIFT),
        SLUICE_ENVIRONMENT="test",
    )
    # Bound but not listening: PostgreSQL cannot bind its port, and exits.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 24760 + PORT_SHIFT + PORTS["postgres"]))
        up = launcher("up", env)
    assert up.returncode == 1, up.stdout
    assert "Sluice stack failed to start: postgres did not become ready" in up.stderr, up.stderr
    assert f"--- last lines of {FAILING_STATE / 'logs' / 'postgres.log'} ---" in up.stderr
    assert "could not bind" in up.stderr, up.stderr
    assert "not running" in launcher("status", env).stdout
