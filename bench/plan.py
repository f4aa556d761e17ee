"""Which runs the benchmark makes, at which rates, in which order. Pure.

- Levels at multiples of the plain deployment's capacity, each run against
  every deployment in turn before the next level (drift in the machine's
  speed then hits all of them alike).
- The fairness scenario's heavy and light rates, from the same capacity.
- With --baseline, a ladder of fixed rates that includes the rate at which
  the CPU per request is compared.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.criteria import CPU_RATE, HEAVY_MULTIPLE, LIGHT_MULTIPLE, multiple_label

DEFAULT_LADDER = (100.0, 200.0, 400.0, 800.0, 1200.0)


def levels(multiples: Sequence[float], capacity: float) -> list[tuple[str, float]]:
    """(label, rate) of each level: `multiples` x `capacity`, labelled "0.5x", "1x", ..."""
    if capacity <= 0:
        raise ValueError("no capacity to take multiples of")
    if not multiples or any(m <= 0 for m in multiples):
        raise ValueError(f"multiples must be > 0: {list(multiples)}")
    return [(multiple_label(m), float(round(m * capacity, 1))) for m in multiples]


def fixed_levels(rates: Sequence[float]) -> list[tuple[str, float]]:
    """(label, rate) of each fixed rate (--rates): "150 rps", ..."""
    if any(r <= 0 for r in rates):
        raise ValueError(f"rates must be > 0: {list(rates)}")
    return [(f"{r:g} rps", float(r)) for r in rates]


def fairness_rates(capacity: float) -> tuple[float, float]:
    """(the heavy client's rate, the light clients' together), from plain's capacity."""
    if capacity <= 0:
        raise ValueError("no capacity to take multiples of")
    return HEAVY_MULTIPLE * capacity, LIGHT_MULTIPLE * capacity


def ladder(rates: Sequence[float]) -> list[float]:
    """The --baseline rates in increasing order, always with CPU_RATE among them."""
    if any(r <= 0 for r in rates):
        raise ValueError(f"rates must be > 0: {list(rates)}")
    return sorted({float(r) for r in rates} | {CPU_RATE})


def interleave(
    names: Sequence[str], rates: Sequence[tuple[str, float]]
) -> list[tuple[str, str, float]]:
    """(deployment, label, rate) in run order: each level against every deployment in turn."""
    return [(name, label, rate) for label, rate in rates for name in names]
