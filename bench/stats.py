"""Per-request outcomes and their summary: pure functions, no I/O."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bench.criteria import LATENCY_TARGET_MS

# Client-side outcomes that are not HTTP statuses.
TIMEOUT = "timeout"
NOT_SENT = "not_sent"  # the generator's connection cap was full at the scheduled time
# Statuses that are deliberate, fast "not now" answers (nginx 429/503, app 503).
REJECTION_STATUSES = frozenset({429, 503})
# Goodput counts the 2xx answered within this long of their scheduled send.
GOODPUT_DEADLINE_S = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One scheduled request. Latency counts from its scheduled send time."""

    kind: str  # "get" | "post" | anything the workload names
    status: int  # HTTP status; 0 when no response arrived
    latency_s: float
    lag_s: float  # how late the generator actually sent it
    error: str = ""  # "" | TIMEOUT | NOT_SENT | exception class name
    tag: str = ""  # the POST's title, for the integrity check
    body: bytes = b""  # the start of a non-2xx answer's body
    client: int = 0  # which of the workload's clients sent it

    @property
    def ok(self) -> bool:
        return not self.error and 200 <= self.status < 300


def reason(outcome: Outcome) -> str:
    """Who refused and why, from the JSON error body: "<layer or app>:<reason>".

    nginx's answers say `"layer": "nginx"`; the app's do not name a layer.
    """
    try:
        data = json.loads(outcome.body)
    except ValueError:
        return "unknown"
    if not isinstance(data, dict):
        return "unknown"
    return f"{data.get('layer', 'app')}:{data.get('reason', 'unknown')}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; NaN when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class StatusStats:
    count: int
    p50_ms: float
    p99_ms: float


def latency_stats(seconds: Sequence[float]) -> StatusStats:
    """Count, p50 and p99 (ms) of some latencies given in seconds."""
    return StatusStats(len(seconds), percentile(seconds, 50) * 1000, percentile(seconds, 99) * 1000)


@dataclass(frozen=True)
class Summary:
    offered_rps: float
    duration_s: float
    scheduled: int
    sent: int
    ok: int
    goodput_rps: float  # 2xx answered within the goodput deadline, per second
    ok_p50_ms: float
    ok_p99_ms: float
    rejected: dict[int, StatusStats] = field(default_factory=dict)
    http_errors: dict[int, StatusStats] = field(default_factory=dict)
    reasons: dict[str, StatusStats] = field(default_factory=dict)  # "503 app:queue_timeout"
    # 429s and 503s by the layer their body names: "nginx", "app"
    refused_by_layer: dict[str, StatusStats] = field(default_factory=dict)
    timeouts: int = 0
    not_sent: int = 0
    client_errors: dict[str, int] = field(default_factory=dict)
    lag_p50_ms: float = math.nan  # how late the generator sent (requests it sent)
    lag_p99_ms: float = math.nan
    ok_within_target: int = 0  # 2xx within the latency target (bench.criteria)

    @property
    def errors(self) -> int:
        """Everything that is not a 2xx: rejections, HTTP errors, timeouts, not sent."""
        return self.scheduled - self.ok

    @property
    def error_rate(self) -> float:
        return self.errors / self.scheduled if self.scheduled else 0.0

    @property
    def rejected_total(self) -> int:
        return sum(s.count for s in self.rejected.values())

    @property
    def rejection_p99_ms(self) -> float:
        return max((s.p99_ms for s in self.rejected.values()), default=math.nan)

    @property
    def server_errors(self) -> int:
        return sum(s.count for code, s in self.http_errors.items() if code >= 500)


def summarize(
    outcomes: Iterable[Outcome],
    *,
    offered_rps: float,
    duration_s: float,
    goodput_deadline_s: float = GOODPUT_DEADLINE_S,
    target_ms: float = LATENCY_TARGET_MS,
) -> Summary:
    outcomes = list(outcomes)
    ok_latencies = [o.latency_s for o in outcomes if o.ok]
    by_status: dict[int, list[float]] = defaultdict(list)
    by_reason: dict[str, list[float]] = defaultdict(list)
    by_layer: dict[str, list[float]] = defaultdict(list)
    client_errors: Counter[str] = Counter()
    timeouts = not_sent = 0
    for o in outcomes:
        if o.error == TIMEOUT:
            timeouts += 1
        elif o.error == NOT_SENT:
            not_sent += 1
        elif o.error:
            client_errors[o.error] += 1
        elif not o.ok:
            by_status[o.status].append(o.latency_s)
            why = reason(o)
            by_reason[f"{o.status} {why}"].append(o.latency_s)
            if o.status in REJECTION_STATUSES:
                by_layer[why.split(":", 1)[0]].append(o.latency_s)

    def _stats(codes: Iterable[int]) -> dict[int, StatusStats]:
        return {code: latency_stats(by_status[code]) for code in sorted(codes)}

    good = sum(1 for latency in ok_latencies if latency <= goodput_deadline_s)
    within_target = sum(1 for latency in ok_latencies if latency * 1000 <= target_ms)
    sent = [o.lag_s for o in outcomes if o.error != NOT_SENT]
    return Summary(
        offered_rps=offered_rps,
        duration_s=duration_s,
        scheduled=len(outcomes),
        sent=len(sent),
        ok=len(ok_latencies),
        goodput_rps=good / duration_s,
        ok_p50_ms=percentile(ok_latencies, 50) * 1000,
        ok_p99_ms=percentile(ok_latencies, 99) * 1000,
        rejected=_stats(c for c in by_status if c in REJECTION_STATUSES),
        http_errors=_stats(c for c in by_status if c not in REJECTION_STATUSES),
        reasons={key: latency_stats(values) for key, values in sorted(by_reason.items())},
        refused_by_layer={key: latency_stats(values) for key, values in sorted(by_layer.items())},
        timeouts=timeouts,
        not_sent=not_sent,
        client_errors=dict(client_errors),
        lag_p50_ms=percentile(sent, 50) * 1000,
        lag_p99_ms=percentile(sent, 99) * 1000,
        ok_within_target=within_target,
    )


def meets_target(summary: Summary, *, p99_ms: float, min_ok_share: float) -> bool:
    """Capacity criterion: at least `min_ok_share` of the scheduled requests got a 2xx
    (refusals, errors, timeouts and not-sent all count against it) and the 2xx p99
    is within `p99_ms`.
    """
    return (
        summary.ok > 0
        and summary.ok >= min_ok_share * summary.scheduled
        and summary.ok_p99_ms <= p99_ms
    )


def split_by_client(
    outcomes: Iterable[Outcome], groups: dict[str, set[int]]
) -> dict[str, list[Outcome]]:
    """The outcomes of each named group of clients (a client in no group is left out)."""
    found: dict[str, list[Outcome]] = {name: [] for name in groups}
    for o in outcomes:
        for name, clients in groups.items():
            if o.client in clients:
                found[name].append(o)
    return found
