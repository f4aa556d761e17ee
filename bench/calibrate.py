"""The generator's own ceiling, measured against a trivial target on this machine.

nginx answering a constant 200 costs almost nothing, so whatever lateness or
latency appears comes from the generator (and the box). The ceiling is the
highest tried rate at which every request got its 200, the generator sent on
schedule (lag p99 within LAG_LIMIT_MS) and p99 stayed within LATENCY_LIMIT_MS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import affinity, loadgen, schedule
from bench.loadgen import Request
from bench.stats import Summary, summarize
from bench.targets import trivial_nginx
from bench.workload import client_address

LAG_LIMIT_MS = 10.0
LATENCY_LIMIT_MS = 25.0


@dataclass(frozen=True)
class CalibrationStep:
    rate: float
    summary: Summary
    cpu_share: float  # generator CPU seconds per wall second (1.0 = one core)
    passed: bool


def keeps_schedule(summary: Summary) -> bool:
    return (
        summary.ok == summary.scheduled
        and summary.lag_p99_ms <= LAG_LIMIT_MS
        and summary.ok_p99_ms <= LATENCY_LIMIT_MS
    )


def calibrate(
    *,
    port: int,
    rates: Sequence[float],
    duration_s: float,
    max_in_flight: int,
    timeout_s: float,
    progress: Callable[[str], None] = print,
    server_cpus: frozenset[int] | None = None,
) -> tuple[float, list[CalibrationStep]]:
    """Try `rates` in order until one fails; return (ceiling, steps).

    `server_cpus`: where the trivial target runs (--one-core: the servers' core).
    """
    steps: list[CalibrationStep] = []
    ceiling = 0.0
    with trivial_nginx(port=port) as target:
        if server_cpus is not None:
            affinity.pin_trees(target.roots, server_cpus)
        for rate in rates:
            offsets = schedule.uniform_offsets(rate, duration_s)
            requests = [Request(method="GET", path="/api/v1/items/", kind="get")] * len(offsets)
            result = loadgen.run(
                target.url,
                requests,
                offsets,
                max_in_flight=max_in_flight,
                timeout_s=timeout_s,
                # As the benchmark's clients send: from an address of their own, whose
                # ephemeral ports cannot collide with a stack's listeners on 127.0.0.1.
                sources=[client_address(0)],
            )
            summary = summarize(result.outcomes, offered_rps=rate, duration_s=duration_s)
            step = CalibrationStep(
                rate=rate,
                summary=summary,
                cpu_share=result.cpu_s / result.wall_s if result.wall_s else 0.0,
                passed=keeps_schedule(summary),
            )
            steps.append(step)
            progress(
                f"  calibration {rate:7.0f} rps: p99 {summary.ok_p99_ms:7.1f} ms, "
                f"lag p99 {summary.lag_p99_ms:6.1f} ms, ok {summary.ok}/{summary.scheduled}, "
                f"generator CPU {step.cpu_share:.2f} core -> {'ok' if step.passed else 'FAIL'}"
            )
            if not step.passed:
                break
            ceiling = rate
    return ceiling, steps
