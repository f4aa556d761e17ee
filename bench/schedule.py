"""The open-loop arrival schedule: when each request is due, whatever the responses do.

Offsets are seconds from the start of a run. The generator sends request i at
offset i (or counts it as not sent); latency is measured from that offset, so
a server that stalls cannot slow the schedule down and hide its own queueing
(coordinated omission).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence


def arrival_count(rate: float, duration_s: float) -> int:
    """How many requests a run of `duration_s` at `rate` per second schedules."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError(f"rate ({rate}) and duration ({duration_s}) must be > 0")
    return max(1, round(rate * duration_s))


def uniform_offsets(rate: float, duration_s: float) -> list[float]:
    """A fixed arrival rate: request i at i / rate."""
    return [i / rate for i in range(arrival_count(rate, duration_s))]


def poisson_offsets(rate: float, duration_s: float, *, seed: int) -> list[float]:
    """Poisson arrivals (exponential gaps) at the same mean rate, reproducible by seed."""
    rng = random.Random(seed)
    count = arrival_count(rate, duration_s)
    offsets, t = [], 0.0
    for _ in range(count):
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


def due_by(offsets: Sequence[float], elapsed_s: float) -> int:
    """Number of requests whose scheduled time is at or before `elapsed_s`."""
    return bisect.bisect_right(offsets, elapsed_s)
