"""The report from synthetic results: targets are judged as issue 6 states them."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.database import Integrity
from bench.procedure import parse_options
from bench.report import evaluate_targets, render, render_summary, write
from bench.results import BenchResult, DeploymentResult, Run
from bench.serverside import ServerSide, run_layers
from bench.stats import Outcome, summarize
from bench.targets import RssSampler
from tests.bench.test_serverside import ADMITTED_GET, APP_REFUSED, CONNECTION_CAPPED, RATE_LIMITED

NO_LOSS = Integrity(0, 0, 0, 0, 0, 0, 0, 0)


def _run(name: str, label: str, rate: float, latency_s: float, rejected: int = 0) -> Run:
    outcomes = [Outcome("get", 200, latency_s, 0.001) for _ in range(100)]
    outcomes += [
        Outcome("get", 503, 0.02, 0.001, body=b'{"reason":"queue_full"}') for _ in range(rejected)
    ]
    summary = summarize(outcomes, offered_rps=rate, duration_s=len(outcomes) / rate)
    return Run(
        deployment=name,
        label=label,
        rate=rate,
        summary=summary,
        integrity=NO_LOSS,
        rss_peak_mb={"app": 200.0, "proxies": 20.0, "postgres": 300.0},
        generator_cpu=0.1,
        cpu_ms_per_request={"app": 4.0, "proxies": 0.5, "postgres": 1.0, "generator": 0.1},
        drain_s=0.4,
        passed=True,
    )


def _result(tmp_path: Path) -> BenchResult:
    options = parse_options(["--quick", "--out", str(tmp_path)])
    sluice = DeploymentResult("sluice", "the stack", capacity=100)
    sluice.levels = [
        _run("sluice", "0.5x", 50, 0.010),
        _run("sluice", "1x", 100, 0.012),
        _run("sluice", "2x", 200, 0.015, rejected=100),
        _run("sluice", "4x", 400, 0.020, rejected=300),
    ]
    sluice.settings = {"SLUICE_WORKERS": "2", "SLUICE_MAX_IN_FLIGHT": "4"}
    plain = DeploymentResult("plain", "uvicorn", capacity=110)
    plain.levels = [_run("plain", "0.5x", 50, 0.008), _run("plain", "4x", 400, 2.0)]
    return BenchResult(
        options=options,
        started=datetime(2026, 1, 1, tzinfo=UTC),
        machine={"cpu": "test"},
        calibration=[],
        ceiling=0.0,
        deployments=[sluice, plain],
    )


SERVER_REFUSAL = "4x: refusal p99 <= 20 ms, server side"
CLIENT_REFUSAL = "4x: refusal p99 <= 50 ms, client side (judged when lag p99 <= 20 ms)"


def test_targets_are_judged_from_the_levels(tmp_path: Path) -> None:
    result = _result(tmp_path)
    sluice = result.deployments[0]
    fast_refusals = [*[ADMITTED_GET] * 100, *[CONNECTION_CAPPED] * 300]
    sluice.levels[3] = replace(
        sluice.levels[3], server=ServerSide(layers=run_layers(fast_refusals), shed={})
    )
    verdicts = {name: met for name, _, met in evaluate_targets(result)}
    assert verdicts["4x: goodput >= 90% of capacity"] is True
    assert verdicts["4x: admitted p99 <= 3 x p99 at 0.5x"] is True
    assert verdicts[SERVER_REFUSAL] is True
    assert verdicts[CLIENT_REFUSAL] is True
    assert verdicts["4x: zero timeouts"] is True
    assert verdicts["zero lost acknowledged writes (every Sluice run)"] is True
    assert verdicts["0.5x: p50 within 3 ms of plain"] is True
    assert verdicts["capacity >= 85% of plain"] is True


def test_slow_refusals_and_a_late_generator_are_called_out(tmp_path: Path) -> None:
    result = _result(tmp_path)
    sluice = result.deployments[0]
    # 1 in 50 refusals waited 140 ms in the app: past the server-side p99 bound.
    slow = [*[ADMITTED_GET] * 100, *[CONNECTION_CAPPED] * 49, APP_REFUSED]
    late = [Outcome("get", 200, 0.050, 0.030) for _ in range(100)]
    late += [Outcome("get", 503, 0.031, 0.030, body=b'{"reason":"queue_full"}')]
    sluice.levels[3] = replace(
        sluice.levels[3],
        summary=summarize(late, offered_rps=400, duration_s=1.0),
        server=ServerSide(layers=run_layers(slow), shed={}),
    )
    checks = {name: (measured, met) for name, measured, met in evaluate_targets(result)}
    assert checks[SERVER_REFUSAL] == ("140.0 ms over 50 refusals (nginx's request_time)", False)
    # The generator sent 30 ms late at p99: the client-side refusal tail is not judged.
    assert checks[CLIENT_REFUSAL][1] is None
    assert "not judged" in checks[CLIENT_REFUSAL][0]
    # Without nginx's log there is nothing to judge server side.
    sluice.levels[3] = replace(sluice.levels[3], server=None)
    checks = {name: (measured, met) for name, measured, met in evaluate_targets(result)}
    assert checks[SERVER_REFUSAL] == ("not measured", None)


def test_report_and_plots_are_written(tmp_path: Path) -> None:
    result = _result(tmp_path)
    text = write(result, tmp_path)
    assert text == (tmp_path / "report.md").read_text()
    assert (tmp_path / "goodput.png").stat().st_size > 0
    assert (tmp_path / "p99.png").stat().st_size > 0
    assert (tmp_path / "results.json").exists()
    summary = (tmp_path / "summary.md").read_text()
    assert "| 4x | 400 |" in summary
    assert "Sluice 100 rps, plain 110 rps" in summary
    assert "20 client(s)" in summary
    assert "503 app:queue_full: 300" in text
    assert "Service time implied at capacity" in text
    assert "smoke run" in render(result, [])


def test_report_says_who_refused_per_layer_and_when_the_client_tail_is_unreliable(
    tmp_path: Path,
) -> None:
    result = _result(tmp_path)
    sluice, plain = result.deployments
    late = [Outcome("get", 200, 0.050, 0.030) for _ in range(100)]  # sent 30 ms late
    late += [
        Outcome("get", 429, 0.031, 0.030, body=b'{"layer":"nginx","reason":"rate_limited"}'),
        Outcome("get", 503, 0.090, 0.030, body=b'{"reason":"queue_full"}'),
    ]
    log = [*[ADMITTED_GET] * 100, RATE_LIMITED, CONNECTION_CAPPED, APP_REFUSED]
    sluice.levels[3] = replace(
        sluice.levels[3],
        summary=summarize(late, offered_rps=400, duration_s=1.0),
        server=ServerSide(layers=run_layers(log), shed={"app:queue_full": 1}),
    )
    text = render(result, [])
    assert "Who refused, per layer" in text
    # run, rate, logged, nginx 429, nginx 503, app 503, app reasons, other statuses
    assert "| 4x | 400 | 103 | 1 | 1 | 1 | app:queue_full: 1 | 0 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 4x | 400 | 1 | 0.0 / 1.0"))
    # nginx: 1 refused as the client saw it, server p50/p99 0/1 ms, client 31/31 ms;
    # app: 1, server 140 ms, client 90 ms; 2xx p99 server 12 ms, client 50 ms; lag 30 ms.
    # Every refusal server side: 0, 1 and 140 ms.
    assert row == (
        "| 4x | 400 | 1 | 0.0 / 1.0 | 31.0 / 31.0 | 1 | 140.0 / 140.0 | 90.0 / 90.0 "
        "| 1.0 / 140.0 | 12.0 | 50.0 | 30.0 / 30.0 **client tail unreliable** |"
    )
    assert "**The client-side tail is unreliable for: 4x (30.0 ms).**" in text
    # The plain deployment records nothing server-side, and the report says so.
    plain_part = text.split(f"## plain: {plain.description}")[1]
    assert "has no nginx and no metrics endpoint" in plain_part
    assert "Who refused, per layer" not in plain_part


def test_clients_default_to_twenty_and_one_is_the_least(tmp_path: Path) -> None:
    assert parse_options(["--out", str(tmp_path)]).clients == 20
    assert parse_options(["--clients", "1", "--out", str(tmp_path)]).clients == 1
    with pytest.raises(SystemExit):
        parse_options(["--clients", "0", "--out", str(tmp_path)])


def test_sampler_reports_memory_and_cpu_of_a_process_tree() -> None:
    with RssSampler({"self": [os.getpid()]}, interval_s=0.05) as sampler:
        sum(i * i for i in range(200_000))
    assert sampler.peak_mb["self"] > 1
    assert sampler.cpu_s["self"] >= 0


def test_fixed_rates_replace_the_capacity_search(tmp_path: Path) -> None:
    options = parse_options(["--rates", "150,300", "--out", str(tmp_path)])
    assert options.rates == (150.0, 300.0)
    assert parse_options(["--out", str(tmp_path)]).rates == ()
    result = replace(_result(tmp_path), options=options)
    text = render(result, [])
    assert "fixed levels of 30 s at 150, 300 rps" in text
    assert "Capacity: not searched (--rates)." in text
    assert "Capacity: not searched (--rates)." in render_summary(result)
