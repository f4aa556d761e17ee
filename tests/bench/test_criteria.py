"""Issue 20's and 21's targets judged from synthetic results, as the issues state them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.criteria import (
    ADMITTED_P99_MS,
    LAG_LIMIT_MS,
    REFUSAL_P99_MS,
    Check,
    issue20,
    issue21,
    tally,
)
from bench.results import BenchResult
from tests.bench import factory


def _by_name(checks: list[Check]) -> dict[tuple[str, str], Check]:
    return {(c.target, c.name): c for c in checks}


def _verdicts(result: BenchResult) -> dict[tuple[str, str], bool | None]:
    return {key: c.met for key, c in _by_name(issue20(result)).items()}


GOODPUT = "goodput >= 95% of Sluice's peak"
ADMITTED = f"admitted (2xx) p99 <= {ADMITTED_P99_MS:g} ms, server side"
REFUSAL = f"refusal p99 <= {REFUSAL_P99_MS:g} ms, server side"
LIGHT = "light clients: >= 99% of their requests 2xx within 250 ms"
LONE = "a lone client with workers x L requests in flight on the idle stack: never refused"


def test_a_run_meeting_every_target_passes_them_all(tmp_path: Path) -> None:
    checks = issue20(factory.issue20(tmp_path))
    assert [c for c in checks if c.met is not True] == []
    found = _by_name(checks)
    assert found["1. capacity", "Sluice capacity / plain capacity >= 1"].measured == (
        "110 / 100 rps = 1.10"
    )
    # Every overload level is judged on each of its six checks.
    for label in ("2x", "4x", "8x"):
        names = [c.name for c in checks if c.target == f"3. overload at {label}"]
        assert names == [
            GOODPUT,
            "0 timeouts",
            "0 lost acknowledged writes",
            "0 500s",
            ADMITTED,
            REFUSAL,
        ]
    assert found["3. overload at 8x", GOODPUT].measured == "110.0 rps = 100.0% of 110.0"
    assert tally(checks) == f"{len(checks)} PASS, 0 FAIL, 0 not judged"


def test_each_missed_target_fails_with_its_figure(tmp_path: Path) -> None:
    result = factory.issue20(tmp_path)
    sluice, plain = result.deployments
    sluice.capacity = 64
    levels = {run.label: run for run in sluice.levels}
    # 1x: 3 % refused. 2x: goodput 80 of a peak of 110. 4x: a timeout, a 500, a
    # lost write, a slow admitted tail on the server. 8x: a slow refusal.
    levels["1x"] = factory.run("sluice", "1x", 100, ok=194, refused=6)
    levels["2x"] = factory.run("sluice", "2x", 200, ok=160, refused=240)
    levels["4x"] = factory.run(
        "sluice",
        "4x",
        400,
        ok=220,
        refused=578,
        timeouts=1,
        errors_500=1,
        lost=1,
        server_latency_s=0.3,
    )
    levels["8x"] = factory.run("sluice", "8x", 800, ok=220, refused=1380, server_refusal_s=0.009)
    sluice.levels = list(levels.values())
    sluice.lone_client = factory.run("sluice", "lone client, 4 in flight", 400, ok=390, refused=10)
    sluice.fairness = factory.fairness_run("sluice", light_ok=900, light_slow=100)
    found = _by_name(issue20(result))
    failed = {key for key, check in found.items() if check.met is False}
    assert failed == {
        ("1. capacity", "Sluice capacity / plain capacity >= 1"),
        ("2. below capacity", "1x: Sluice refuses <= 1%"),
        ("3. overload at 2x", GOODPUT),
        ("3. overload at 4x", "0 timeouts"),
        ("3. overload at 4x", "0 500s"),
        ("3. overload at 4x", "0 lost acknowledged writes"),
        ("3. overload at 4x", ADMITTED),
        ("3. overload at 8x", REFUSAL),
        ("4. fairness", LIGHT),
        ("4. fairness", LONE),
    }
    assert found["1. capacity", "Sluice capacity / plain capacity >= 1"].measured == (
        "64 / 100 rps = 0.64"
    )
    assert found["2. below capacity", "1x: Sluice refuses <= 1%"].measured == (
        "6 of 200 = 3.00% at 100 rps"
    )
    assert found["3. overload at 2x", GOODPUT].measured == "80.0 rps = 72.7% of 110.0"
    assert found["3. overload at 4x", ADMITTED].measured.startswith("300.0 ms; client side")
    assert found["3. overload at 8x", REFUSAL].measured.startswith("9.0 ms over 1380 refusals")
    assert found["4. fairness", LIGHT].measured == "900 of 1000 = 90.00%"
    assert found["4. fairness", LONE].measured.startswith("10 refused of 400")
    assert plain.capacity == 100


def test_a_lagging_generator_is_said_and_only_the_server_side_is_judged(tmp_path: Path) -> None:
    result = factory.issue20(tmp_path)
    sluice = result.deployments[0]
    late = (LAG_LIMIT_MS + 10) / 1000
    # At 4x the generator sent 30 ms late: its 2xx arrived past the goodput deadline
    # as the client saw them (1.2 s) while nginx answered them in 60 ms.
    levels = {run.label: run for run in sluice.levels}
    levels["4x"] = factory.run(
        "sluice", "4x", 400, ok=220, refused=580, latency_s=1.2, server_latency_s=0.06, lag_s=late
    )
    sluice.levels = list(levels.values())
    found = _by_name(issue20(result))
    goodput = found["3. overload at 4x", GOODPUT]
    assert goodput.met is True  # nginx's count: 220 in 2 s
    assert goodput.measured.startswith("server side 110.0 rps = 100.0% of 110.0; client side 0.0")
    assert "client side flagged" in goodput.measured
    admitted = found["3. overload at 4x", ADMITTED]
    assert admitted.met is True
    assert "client side 1200.0 ms (generator lag p99 30.0 ms > 20 ms" in admitted.measured
    # Timeouts come from nginx's log then: 499 (the client gave up) and 504.
    assert found["3. overload at 4x", "0 timeouts"].measured.startswith("server side 0")
    # Without nginx's log there is nothing to judge a lagging run's goodput by.
    levels["4x"] = replace(levels["4x"], server=None)
    sluice.levels = list(levels.values())
    found = _by_name(issue20(result))
    assert found["3. overload at 4x", GOODPUT].met is None
    assert found["3. overload at 4x", ADMITTED].met is None


def test_fairness_under_lag_is_judged_by_what_nginx_served_in_time(tmp_path: Path) -> None:
    result = factory.issue20(tmp_path)
    sluice = result.deployments[0]
    # Client side 10 % were late, but the generator lagged; nginx served all in 20 ms.
    sluice.fairness = factory.fairness_run("sluice", light_ok=900, light_slow=100, lag_s=0.05)
    check = _by_name(issue20(result))["4. fairness", LIGHT]
    assert check.met is True
    assert check.measured.startswith("server side 1000 of 1000 = 100.00%; client side 900")


def test_fixed_rates_leave_the_capacity_and_level_targets_unjudged(tmp_path: Path) -> None:
    result = factory.issue20(tmp_path, "--rates", "100,200")
    checks = issue20(result)
    assert [c.met for c in checks if c.target.startswith(("1.", "2."))] == [None, None]
    assert not [c for c in checks if c.target.startswith("3.")]


def test_missing_levels_are_not_measured_not_passed(tmp_path: Path) -> None:
    result = factory.issue20(tmp_path)
    sluice = result.deployments[0]
    sluice.levels = [run for run in sluice.levels if run.label != "8x"]
    sluice.fairness = sluice.lone_client = None
    found = _by_name(issue20(result))
    assert found["3. overload at 8x", "every overload check"].met is None
    assert found["4. fairness", LIGHT].measured == "not measured"
    assert found["4. fairness", LONE].met is None


def test_issue21_statements_cpu_and_peak_against_the_baseline(tmp_path: Path) -> None:
    result = factory.issue21(tmp_path)
    found = {c.name: c for c in issue21(result)}
    read = found["at most 3 statements per read (PgBouncer total_query_count)"]
    assert (read.met, read.measured) == (True, "3.00 (300 over 100 requests); baseline: 7.00")
    assert found["at most 4 statements per create (PgBouncer total_query_count)"].met is True
    # CPU of the whole stack per request at 100 rps: 2 + 0.5 + 1 against 6 + 0.5 + 1.
    cpu = found["stack CPU per request at 100 rps <= 0.6 x baseline's"]
    assert (cpu.met, cpu.measured) == (True, "3.50 vs 7.50 ms = 0.47 x")
    peak = found["peak goodput >= 1.6 x baseline's"]
    assert (peak.met, peak.measured) == (True, "800.0 vs 400.0 rps = 2.00 x")
    current, baseline = result.deployments
    current.statements["read"] = replace(current.statements["read"], queries=500)
    current.levels[0] = factory.run("sluice", "100 rps", 100, cpu_app_ms=5.0)
    current.levels[1] = factory.run("sluice", "800 rps", 800, ok=600, refused=200)
    found = {c.name: c for c in issue21(result)}
    assert found["at most 3 statements per read (PgBouncer total_query_count)"].met is False
    assert found["stack CPU per request at 100 rps <= 0.6 x baseline's"].met is False
    assert found["peak goodput >= 1.6 x baseline's"].met is False
    baseline.levels = []
    found = {c.name: c for c in issue21(result)}
    assert found["peak goodput >= 1.6 x baseline's"].met is None
