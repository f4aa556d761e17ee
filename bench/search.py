"""Capacity search: grow the rate geometrically until a step fails, then bisect."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CapacitySearch:
    """Pure state machine: ask `next_rate()`, run it, `record()` whether it met the target.

    Capacity is the highest rate that passed. The search stops when the gap
    between the highest pass and the lowest failure is within `resolution`, at
    `max_rate` (the generator's own ceiling), or after `max_steps`.

    A failed step is run once more before it counts: on a shared 2-core
    machine one hiccup (another process, a checkpoint) can fail a step far
    below capacity, and the bisection never looks above a failure again.
    """

    start: float
    max_rate: float
    factor: float = 2.0
    resolution: float = 0.1
    max_steps: int = 10
    min_rate: float = 5.0
    confirm_failures: bool = True
    history: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def passed(self) -> float:
        return max((r for r, ok in self.history if ok), default=0.0)

    @property
    def failed(self) -> float | None:
        """The lowest rate none of whose tries passed."""
        passed = {r for r, ok in self.history if ok}
        return min((r for r, ok in self.history if r not in passed), default=None)

    @property
    def capacity(self) -> float:
        return self.passed

    def record(self, rate: float, ok: bool) -> None:
        self.history.append((rate, ok))

    def next_rate(self) -> float | None:
        if len(self.history) >= self.max_steps:
            return None
        lo, hi = self.passed, self.failed
        if not self.history:
            return float(round(min(self.start, self.max_rate)))
        last, ok = self.history[-1]
        if self.confirm_failures and not ok and [r for r, _ in self.history].count(last) == 1:
            return last
        if hi is None:
            if lo >= self.max_rate:
                return None
            return float(round(min(lo * self.factor, self.max_rate)))
        if lo == 0.0:
            rate = round(hi / self.factor)
            return float(rate) if rate >= self.min_rate else None
        if hi <= lo * (1 + self.resolution):
            return None
        rate = round((lo + hi) / 2)
        return float(rate) if lo < rate < hi else None
