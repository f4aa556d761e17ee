"""Synthetic benchmark results: runs whose client and server sides say what a test needs."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bench.database import Integrity
from bench.procedure import parse_options
from bench.results import BenchResult, DeploymentResult, Group, Run
from bench.serverside import ServerSide, run_layers
from bench.statements import StatementCount
from bench.stats import Outcome, summarize

NO_LOSS = Integrity(0, 0, 0, 0, 0, 0, 0, 0)
REFUSED_BODY = b'{"detail":"x","reason":"connection_limit","layer":"nginx"}'


def log_line(
    status: int, request_time_s: float, *, address: str = "127.0.0.10", refused: bool = False
) -> str:
    """One line of nginx's sluice_json access log."""
    return json.dumps(
        {
            "remote_addr": address,
            "uri": "/api/v1/items/?skip=1&limit=20",
            "status": status,
            "request_time": request_time_s,
            "upstream_status": "" if refused else str(status),
            "limit_req": "PASSED",
            "limit_conn": "REJECTED" if refused else "PASSED",
        }
    )


def run(
    name: str,
    label: str,
    rate: float,
    *,
    ok: int = 100,
    latency_s: float = 0.010,
    refused: int = 0,
    timeouts: int = 0,
    errors_500: int = 0,
    lag_s: float = 0.001,
    server_latency_s: float | None = None,
    server_refusal_s: float = 0.0,
    server: bool = True,
    cpu_app_ms: float = 4.0,
    lost: int = 0,
) -> Run:
    """A run of `ok` 2xx, `refused` 503s, ... at `rate`; nginx's side too unless not `server`."""
    outcomes = [Outcome("get", 200, latency_s, lag_s) for _ in range(ok)]
    outcomes += [Outcome("get", 503, 0.002, lag_s, body=REFUSED_BODY) for _ in range(refused)]
    outcomes += [Outcome("get", 0, 5.0, lag_s, error="timeout") for _ in range(timeouts)]
    outcomes += [Outcome("post", 500, 0.02, lag_s) for _ in range(errors_500)]
    summary = summarize(outcomes, offered_rps=rate, duration_s=len(outcomes) / rate)
    side = None
    if server:
        admitted = server_latency_s if server_latency_s is not None else latency_s
        lines = [log_line(200, admitted) for _ in range(ok)]
        lines += [log_line(503, server_refusal_s, refused=True) for _ in range(refused)]
        lines += [log_line(499, 5.0) for _ in range(timeouts)]
        lines += [log_line(500, 0.02) for _ in range(errors_500)]
        side = ServerSide(layers=run_layers(lines), shed={})
    return Run(
        deployment=name,
        label=label,
        rate=rate,
        summary=summary,
        integrity=replace(NO_LOSS, acknowledged=10, acknowledged_missing=lost),
        rss_peak_mb={"app": 200.0, "proxies": 20.0, "postgres": 300.0},
        generator_cpu=0.1,
        cpu_ms_per_request={"app": cpu_app_ms, "proxies": 0.5, "postgres": 1.0, "generator": 0.1},
        drain_s=0.4,
        passed=True,
        server=side,
    )


def fairness_run(name: str, *, light_ok: int, light_slow: int, lag_s: float = 0.001) -> Run:
    """The fairness scenario: a heavy client mostly refused, light ones `light_slow` late."""
    heavy = [Outcome("get", 200, 0.02, lag_s, client=0) for _ in range(50)]
    heavy += [Outcome("get", 429, 0.001, lag_s, client=0, body=REFUSED_BODY) for _ in range(250)]
    light = [Outcome("get", 200, 0.02, lag_s, client=1 + i % 19) for i in range(light_ok)]
    light += [Outcome("get", 200, 0.4, lag_s, client=1) for _ in range(light_slow)]
    lines = [log_line(200, 0.02, address="127.0.0.11") for _ in range(light_ok + light_slow)]
    base = run(name, "fairness", 350, server=False)
    groups = {
        "heavy": Group(1, summarize(heavy, offered_rps=300, duration_s=1), None),
        "light": Group(
            19,
            summarize(light, offered_rps=50, duration_s=(light_ok + light_slow) / 50),
            run_layers(lines),
        ),
    }
    return replace(
        base, summary=summarize(heavy + light, offered_rps=350, duration_s=1), groups=groups
    )


def issue20(tmp_path: Path, *argv: str) -> BenchResult:
    """Sluice meeting every issue-20 target against a plain deployment of capacity 100."""
    options = parse_options(["--quick", "--out", str(tmp_path), *argv])
    sluice = DeploymentResult("sluice", "the stack", capacity=110)
    sluice.search = [run("sluice", "search", 110, ok=200)]
    sluice.levels = [
        run("sluice", "0.5x", 50, ok=100),
        run("sluice", "1x", 100, ok=200),
        # 110 rps served at each overload level (2 s of schedule), Sluice's peak.
        run("sluice", "2x", 200, ok=220, refused=180, latency_s=0.05),
        run("sluice", "4x", 400, ok=220, refused=580, latency_s=0.06),
        run("sluice", "8x", 800, ok=220, refused=1380, latency_s=0.07),
    ]
    sluice.settings = {"SLUICE_WORKERS": "2", "SLUICE_MAX_IN_FLIGHT": "2"}
    sluice.lone_client = run("sluice", "lone client, 4 in flight", 400, ok=400)
    sluice.fairness = fairness_run("sluice", light_ok=1000, light_slow=5)
    plain = DeploymentResult("plain", "uvicorn", capacity=100)
    plain.search = [run("plain", "search", 100, ok=200, server=False)]
    plain.levels = [
        run("plain", "0.5x", 50, server=False),
        run("plain", "8x", 800, ok=10, timeouts=700, server=False),
    ]
    plain.fairness = fairness_run("plain", light_ok=100, light_slow=900)
    return BenchResult(
        options=options,
        started=datetime(2026, 1, 1, tzinfo=UTC),
        machine={"cpu": "test", "commit": "abc1234"},
        calibration=[],
        ceiling=0.0,
        deployments=[sluice, plain],
        provenance={"command": "python -m bench --quick", "commit": "abc", "dirty": "no"},
    )


def issue21(tmp_path: Path) -> BenchResult:
    """The current code against a baseline with 7 statements a read and twice the CPU."""
    options = parse_options(["--baseline", "dccb707", "--quick", "--out", str(tmp_path)])
    current = DeploymentResult("sluice", "the current code")
    current.levels = [
        run("sluice", "100 rps", 100, cpu_app_ms=2.0),
        run("sluice", "800 rps", 800, ok=800),
    ]
    current.statements = {
        "read": StatementCount("read", 100, 100, 300, 100),
        "create": StatementCount("create", 100, 100, 400, 100),
    }
    baseline = DeploymentResult("baseline", "dccb707")
    baseline.levels = [
        run("baseline", "100 rps", 100, cpu_app_ms=6.0),
        run("baseline", "800 rps", 800, ok=400, refused=400),
    ]
    baseline.statements = {
        "read": StatementCount("read", 100, 100, 700, 100),
        "create": StatementCount("create", 100, 100, 600, 100),
    }
    return BenchResult(
        options=options,
        started=datetime(2026, 1, 1, tzinfo=UTC),
        machine={"cpu": "test"},
        calibration=[],
        ceiling=0.0,
        deployments=[current, baseline],
    )
