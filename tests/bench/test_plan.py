"""Level planning, statement arithmetic and the one-core plan: pure, no processes."""

from __future__ import annotations

import os
import socket

import pytest

from bench.affinity import describe, plan_one_core
from bench.criteria import CPU_RATE, DEFAULT_MULTIPLES
from bench.plan import fairness_rates, fixed_levels, interleave, ladder, levels
from bench.statements import StatementCount, Totals, count
from bench.targets import TargetError, sluice_deployment, wait_for_ports


def test_levels_are_multiples_of_plains_capacity() -> None:
    assert levels(DEFAULT_MULTIPLES, 156) == [
        ("0.5x", 78.0),
        ("1x", 156.0),
        ("2x", 312.0),
        ("4x", 624.0),
        ("8x", 1248.0),
    ]
    with pytest.raises(ValueError):
        levels(DEFAULT_MULTIPLES, 0)
    with pytest.raises(ValueError):
        levels((0.5, -1), 100)
    assert fixed_levels([150, 300]) == [("150 rps", 150.0), ("300 rps", 300.0)]


def test_each_level_runs_against_every_deployment_before_the_next() -> None:
    order = interleave(["sluice", "plain"], [("0.5x", 50.0), ("1x", 100.0)])
    assert order == [
        ("sluice", "0.5x", 50.0),
        ("plain", "0.5x", 50.0),
        ("sluice", "1x", 100.0),
        ("plain", "1x", 100.0),
    ]


def test_fairness_rates_and_the_baseline_ladder() -> None:
    assert fairness_rates(100) == (300.0, 50.0)
    with pytest.raises(ValueError):
        fairness_rates(0)
    # The CPU comparison's rate is always on the ladder, which runs low to high.
    assert ladder([800, 200]) == sorted([200.0, 800.0, CPU_RATE])
    assert ladder([100, 200]) == [100.0, 200.0]


def test_statements_per_request_from_two_readings_of_pgbouncers_counters() -> None:
    # Issue 21's reading of dccb707: 700 queries for 100 authenticated reads.
    reads = count(
        "read",
        before=Totals(queries=1200, transactions=300),
        after=Totals(queries=1900, transactions=400),
        requests=100,
        ok=100,
    )
    assert reads == StatementCount("read", 100, 100, 700, 100)
    assert reads.per_request == 7.0
    assert reads.transactions_per_request == 1.0
    # A refused request sends no statement: the divisor is the 2xx answers.
    refused = count("create", before=Totals(0, 0), after=Totals(392, 98), requests=100, ok=98)
    assert refused.per_request == 4.0
    assert count("read", before=Totals(5, 1), after=Totals(5, 1), requests=0, ok=0).per_request == 0
    with pytest.raises(ValueError, match="went down"):
        count("read", before=Totals(10, 2), after=Totals(3, 1), requests=1, ok=1)


def test_one_core_puts_servers_and_generator_on_different_cpus() -> None:
    two = plan_one_core({0, 1})
    assert two.servers == {0} and two.generator == {1}
    assert "CPU 0" in two.describe() and "generator on CPU 1" in two.describe()
    # Only the CPUs this process may use count, whichever they are.
    assert plan_one_core({7, 3, 5}).servers == {3}
    assert plan_one_core({7, 3, 5}).generator == {5}
    with pytest.raises(ValueError, match="two CPUs"):
        plan_one_core({2})


def test_where_threads_may_run_is_described_per_set_of_cpus() -> None:
    found = {frozenset({0, 1}): 2, frozenset({0}): 97}
    assert describe(found) == "CPU 0: 97 threads; CPU 0,1: 2 threads"
    assert describe({frozenset({1}): 1}) == "CPU 1: 1 thread"
    assert describe({}) == "no threads found"


def test_a_stack_is_described_from_what_it_publishes() -> None:
    env = {
        "SLUICE_URL": "http://127.0.0.1:36120",
        "SLUICE_METRICS_URL": "http://127.0.0.1:36123/metrics",
        "SLUICE_STATE_DIR": "/state",
        "SLUICE_SUPERVISOR_PID": "7",
        **{f"SLUICE_PID_{name}": str(pid) for pid, name in enumerate(SERVICES, start=10)},
    }
    target = sluice_deployment(env, name="baseline")
    assert (target.name, target.url) == ("baseline", "http://127.0.0.1:36120")
    assert target.rss_roots == {"app": [12], "proxies": [13, 11], "postgres": [10]}
    assert str(target.access_log) == "/state/logs/access.log"
    # --one-core pins every tree, the exporters', Prometheus' and the supervisor's too.
    assert target.roots == [7, *range(10, 10 + len(SERVICES))]
    # The in-process stack's supervisor is this very process: never pinned with it.
    ours = sluice_deployment({**env, "SLUICE_SUPERVISOR_PID": str(os.getpid())})
    assert os.getpid() not in ours.roots


SERVICES = ("POSTGRES", "PGBOUNCER", "GUNICORN", "NGINX", "PROMETHEUS", "NGINX_EXPORTER")


def test_a_port_held_by_any_socket_is_waited_for_then_refused() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(TargetError, match=f"ports \\[{port}\\] still in use"):
            wait_for_ports([port], timeout_s=0.5)
    wait_for_ports([port], timeout_s=0.5)  # free again: no wait
