"""The report, its summary, the plots and publishing them, from synthetic results."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from bench import publish
from bench.procedure import parse_options
from bench.report import render, render_summary, write
from bench.serverside import ServerSide, run_layers
from bench.stats import Outcome, summarize
from bench.targets import RssSampler
from tests.bench import factory
from tests.bench.test_serverside import ADMITTED_GET, APP_REFUSED, CONNECTION_CAPPED, RATE_LIMITED


def test_report_plots_and_summary_are_written(tmp_path: Path) -> None:
    result = factory.issue20(tmp_path)
    text = write(result, tmp_path)
    assert text == (tmp_path / "report.md").read_text()
    assert (tmp_path / "goodput.png").stat().st_size > 0
    assert (tmp_path / "p99.png").stat().st_size > 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["provenance"]["command"] == "python -m bench --quick"
    assert "smoke run" in text
    assert "Mode: **shared cores**." in text
    assert "the **plain** deployment's capacity, each against Sluice then plain" in text
    assert "## Targets (issue 20)" in text
    assert "| 3. overload at 8x | refusal p99 <= 5 ms, server side | no refusals" not in text
    assert (
        "| 1. capacity | Sluice capacity / plain capacity >= 1 | 110 / 100 rps = 1.10 | PASS |"
    ) in text
    assert "**FAIL**" not in text
    summary = (tmp_path / "summary.md").read_text()
    assert "| 8x | 800 |" in summary
    assert "Sluice 110 rps, plain 100 rps; levels at multiples of plain's" in summary
    assert "Targets: " in summary and "0 FAIL" in summary
    assert "- PASS 4. fairness: light clients" in summary


def test_report_shows_the_fairness_groups_and_the_lone_client(tmp_path: Path) -> None:
    text = render(factory.issue20(tmp_path), [])
    fairness = text.split("## Fairness: one heavy client beside light ones")[1]
    # heavy: 1 client, 300 rps offered, 50 rps served, 250 refused; no nginx lines of its own.
    assert "| heavy | 1 | 300 | 50.0 | 50/300 | 250 (83.3%) | 20.0 / - | 16.7% | 0 |" in fairness
    # light: 19 clients, 5 of 1005 late as the client saw them, none as nginx did.
    assert (
        "| light | 19 | 50 | 50.0 | 1005/1005 | 0 (0.0%) | 20.0 / 20.0 | 99.5% / 100.0% | 0 |"
        in (fairness)
    )
    lone = text.split("## A lone client on the idle stack")[1]
    assert "lone client, 4 in flight. 400 requests in 1.0 s, 400 2xx, **0 refused**" in lone


def test_one_core_mode_is_said(tmp_path: Path) -> None:
    result = replace(
        factory.issue20(tmp_path, "--one-core"), mode="one core: every deployment's ... CPU 0"
    )
    text = render(result, [])
    assert "Mode: **one core: every deployment's ... CPU 0**." in text
    assert "Issue 20's target 5 is targets 1-3 below holding in this mode" in text
    assert "(one core: every deployment's ... CPU 0;" in render_summary(result)


def test_baseline_report_has_statements_before_after_and_issue21(tmp_path: Path) -> None:
    result = factory.issue21(tmp_path)
    text = write(result, tmp_path)
    assert "--baseline dccb707: that revision's stack from a git worktree" in text
    assert "| read | 3 | 3.00 (300 / 100 of 100; 1.00 transactions) | 7.00 (700 / 100" in text
    # offered | current goodput, p50/p99 (server p99), refused, timeouts, CPU | baseline's
    assert (
        "| 100 | 100.0 | 10.0 / 10.0 (10.0) | 0.0% | 0 | 3.50 "
        "| 100.0 | 10.0 / 10.0 (10.0) | 0.0% | 0 | 7.50 |"
    ) in text
    assert "the whole stack 3.50 vs 7.50" in text
    assert "## Targets (issue 21: the current code against dccb707)" in text
    assert "4 PASS, 0 FAIL, 0 not judged" in text
    summary = (tmp_path / "summary.md").read_text()
    assert "read: sluice 3.00, baseline 7.00" in summary
    assert "| 800 | 800 | 400 |" in summary


def test_report_says_who_refused_per_layer_and_when_the_client_tail_is_unreliable(
    tmp_path: Path,
) -> None:
    result = factory.issue20(tmp_path)
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
    assert "| 4x | 400 | 103 | 1 | 0 | 1 | 1 | app:queue_full: 1 | 0 |" in text
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
    plain_part = text.split(f"## plain: {plain.description}")[1].split("## Fairness")[0]
    assert "has no nginx and no metrics endpoint" in plain_part
    assert "Who refused, per layer" not in plain_part


def test_options_defaults_and_modes(tmp_path: Path) -> None:
    out = ["--out", str(tmp_path)]
    options = parse_options(out)
    assert options.clients == 20
    assert options.multiples == (0.5, 1.0, 2.0, 4.0, 8.0)
    assert options.target_p99_ms == 250
    assert options.fairness and not options.one_core and not options.baseline
    assert parse_options(["--clients", "1", *out]).clients == 1
    for bad in (["--clients", "0"], ["--clients", "245"], ["--multiples", "1,-2"]):
        with pytest.raises(SystemExit):
            parse_options([*bad, *out])
    baseline = parse_options(["--baseline", "dccb707", "--port-base", "36100", *out])
    assert baseline.rates == (100.0, 200.0, 400.0, 800.0, 1200.0)
    assert baseline.baseline_port_base == 36120
    assert not baseline.fairness  # Sluice against Sluice: no plain capacity to size it
    assert baseline.command[:5] == ("python", "-m", "bench", "--baseline", "dccb707")
    assert parse_options(["--one-core", *out]).one_core


def test_sampler_reports_memory_and_cpu_of_a_process_tree() -> None:
    with RssSampler({"self": [os.getpid()]}, interval_s=0.05) as sampler:
        sum(i * i for i in range(200_000))
    assert sampler.peak_mb["self"] > 1
    assert sampler.cpu_s["self"] >= 0


def test_fixed_rates_replace_the_capacity_search(tmp_path: Path) -> None:
    result = factory.issue20(tmp_path, "--rates", "150,300")
    assert result.options.rates == (150.0, 300.0)
    text = render(result, [])
    assert "fixed levels of 3 s at 150, 300 rps" in text
    assert "Capacity: not searched (--rates)." in text
    assert "Capacity: not searched (--rates)." in render_summary(result)


def test_publish_copies_plots_and_summary_with_their_provenance(tmp_path: Path) -> None:
    results, docs = tmp_path / "results", tmp_path / "docs" / "bench"
    result = factory.issue20(results)
    result.provenance.update(commit="0123abcd", dirty="yes", date="2026-01-01 10:00 UTC")
    write(result, results)
    written = publish.publish(results, docs)
    assert sorted(p.name for p in written) == ["ABOUT.md", "goodput.png", "p99.png", "summary.md"]
    assert (docs / "summary.md").read_text() == (results / "summary.md").read_text()
    about = (docs / "ABOUT.md").read_text()
    assert "- command: `python -m bench --quick`" in about
    assert "- commit: `0123abcd` (**with uncommitted changes**" in about
    assert "- date: 2026-01-01 10:00 UTC" in about
    assert publish.main([str(results), str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "ABOUT.md").exists()
    with pytest.raises(FileNotFoundError):
        publish.publish(tmp_path / "docs", tmp_path / "nowhere")


def test_provenance_names_this_checkouts_commit() -> None:
    record = publish.provenance(["python", "-m", "bench", "--quick"])
    assert record["command"] == "python -m bench --quick"
    assert len(record["commit"]) == 40
    assert record["dirty"] in ("yes", "no")
