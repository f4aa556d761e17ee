"""The targets the benchmark judges (issues 20 and 21): every threshold, and the checks.

Pure: the checks read a finished `BenchResult` and say, per target, what was
measured and whether it met the threshold (`None`: not judged, with why).
The thresholds are here and nowhere else; the report, the capacity search and
the plots read them from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.results import BenchResult, DeploymentResult, Group, Run

# --------------------------------------------------------------------------
# Issue 20: refuse only what cannot be served in time

# Capacity, the same definition for both deployments: the highest rate at which
# at least CAPACITY_MIN_OK of the scheduled requests got a 2xx (refusals count
# as failures) and the 2xx p99 stayed within LATENCY_TARGET_MS.
LATENCY_TARGET_MS = 250.0
CAPACITY_MIN_OK = 0.99
# 1. Sluice's capacity over plain's.
CAPACITY_RATIO_MIN = 1.0
# The levels, as multiples of the plain deployment's capacity.
DEFAULT_MULTIPLES = (0.5, 1.0, 2.0, 4.0, 8.0)
# 2. Below capacity: the share of requests Sluice may refuse (429 and 503).
BELOW_CAPACITY = (0.5, 1.0)
MAX_REFUSED_SHARE = 0.01
# 3. Overload.
OVERLOAD = (2.0, 4.0, 8.0)
GOODPUT_OF_PEAK_MIN = 0.95
ADMITTED_P99_MS = LATENCY_TARGET_MS  # server side
REFUSAL_P99_MS = 5.0  # server side
# Above this generator lag p99, a run's client-side figures are partly the
# generator's: they are flagged, and only the server-side ones are judged.
LAG_LIMIT_MS = 20.0
# 4. Fairness: one heavy client beside light ones, in multiples of plain's capacity.
HEAVY_MULTIPLE = 3.0
LIGHT_MULTIPLE = 0.5
LIGHT_CLIENTS = 19
LIGHT_SERVED_MIN = 0.99  # share of the light clients' requests: 2xx within LATENCY_TARGET_MS

# --------------------------------------------------------------------------
# Issue 21: half the work per request, judged against a fixed earlier revision

MAX_STATEMENTS = {"read": 3.0, "create": 4.0}  # per request, from PgBouncer's SHOW STATS
CPU_RATE = 100.0  # rps at which the stack's CPU per request is compared
CPU_RATIO_MAX = 0.6
PEAK_RATIO_MIN = 1.6


@dataclass(frozen=True)
class Check:
    """One judged target: which, what was measured, and whether it was met."""

    target: str  # the issue's target, e.g. "3. overload at 4x"
    name: str
    measured: str
    met: bool | None  # None: not judged (not measured, or only client side under lag)


def multiple_label(multiple: float) -> str:
    """The label of the level at `multiple` x plain's capacity: "0.5x", "1x", ..."""
    return f"{multiple:g}x"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms"


def lagged(run: Run) -> bool:
    """Whether the generator sent this run's requests too late for its client-side tail."""
    return run.summary.lag_p99_ms > LAG_LIMIT_MS


def _level(deployment: DeploymentResult, label: str) -> Run | None:
    return next((r for r in deployment.levels if r.label == label), None)


def refused_share(run: Run) -> float:
    s = run.summary
    return s.rejected_total / s.scheduled if s.scheduled else 0.0


def count_500(run: Run) -> int:
    return sum(st.count for code, st in run.summary.http_errors.items() if code == 500)


def server_goodput(run: Run) -> float | None:
    """2xx that nginx answered within the goodput deadline, per second of schedule."""
    layers = run.server.layers if run.server else None
    if layers is None or not run.summary.duration_s:
        return None
    return layers.admitted_within_deadline / run.summary.duration_s


def server_timeouts(run: Run) -> int | None:
    """What nginx logged of requests nobody got an answer to in time: 499 (the client
    gave up first) and 504 (the app did not answer)."""
    layers = run.server.layers if run.server else None
    if layers is None:
        return None
    return layers.other.get(499, 0) + layers.other.get(504, 0)


def _capacity(sluice: DeploymentResult, plain: DeploymentResult, fixed: bool) -> list[Check]:
    name = f"Sluice capacity / plain capacity >= {CAPACITY_RATIO_MIN:g}"
    target = "1. capacity"
    if fixed:
        return [Check(target, name, "not searched (--rates)", None)]
    if plain.capacity <= 0:
        return [Check(target, name, "plain's capacity not found", None)]
    ratio = sluice.capacity / plain.capacity
    return [
        Check(
            target,
            name,
            f"{sluice.capacity:.0f} / {plain.capacity:.0f} rps = {ratio:.2f}",
            ratio >= CAPACITY_RATIO_MIN,
        )
    ]


def _below(sluice: DeploymentResult) -> list[Check]:
    checks = []
    for multiple in BELOW_CAPACITY:
        label = multiple_label(multiple)
        run = _level(sluice, label)
        name = f"{label}: Sluice refuses <= {MAX_REFUSED_SHARE:.0%}"
        if run is None:
            checks.append(Check("2. below capacity", name, "not measured", None))
            continue
        share = refused_share(run)
        checks.append(
            Check(
                "2. below capacity",
                name,
                f"{run.summary.rejected_total} of {run.summary.scheduled} = {share:.2%} "
                f"at {run.rate:.0f} rps",
                share <= MAX_REFUSED_SHARE,
            )
        )
    return checks


def _overload_level(run: Run, *, label: str, peak: float) -> list[Check]:
    """Target 3 at one level; client-side figures give way to nginx's when the generator lagged."""
    target = f"3. overload at {label}"
    s = run.summary
    late = lagged(run)
    layers = run.server.layers if run.server else None
    flag = f" (generator lag p99 {_ms(s.lag_p99_ms)} > {LAG_LIMIT_MS:g} ms: client side flagged)"
    checks = []

    # Goodput against Sluice's own peak.
    name = f"goodput >= {GOODPUT_OF_PEAK_MIN:.0%} of Sluice's peak"
    server = server_goodput(run)
    client = f"{s.goodput_rps:.1f} rps = {s.goodput_rps / peak:.1%} of {peak:.1f}" if peak else ""
    if not peak:
        checks.append(Check(target, name, "no peak goodput", None))
    elif late and server is not None:
        checks.append(
            Check(
                target,
                name,
                f"server side {server:.1f} rps = {server / peak:.1%} of {peak:.1f}; "
                f"client side {client}{flag}",
                server >= GOODPUT_OF_PEAK_MIN * peak,
            )
        )
    else:
        checks.append(
            Check(
                target,
                name,
                client + (flag + ", no server side" if late else ""),
                None if late else s.goodput_rps >= GOODPUT_OF_PEAK_MIN * peak,
            )
        )

    # Timeouts.
    timeouts = server_timeouts(run)
    if late and timeouts is not None:
        checks.append(
            Check(
                target,
                "0 timeouts",
                f"server side {timeouts} (nginx 499 + 504); client side {s.timeouts}{flag}",
                timeouts == 0,
            )
        )
    else:
        checks.append(Check(target, "0 timeouts", str(s.timeouts), s.timeouts == 0))

    lost = run.integrity.acknowledged_missing
    checks.append(
        Check(
            target,
            "0 lost acknowledged writes",
            f"{lost} of {run.integrity.acknowledged}",
            lost == 0,
        )
    )
    server_500 = layers.other.get(500, 0) if layers is not None else None
    if late and server_500 is not None:
        checks.append(
            Check(
                target,
                "0 500s",
                f"server side {server_500}; client side {count_500(run)}{flag}",
                server_500 == 0,
            )
        )
    else:
        checks.append(Check(target, "0 500s", str(count_500(run)), count_500(run) == 0))

    # Latency, server side (nginx's $request_time), the client's beside it.
    name = f"admitted (2xx) p99 <= {ADMITTED_P99_MS:g} ms, server side"
    client_p99 = f"client side {_ms(s.ok_p99_ms)}" + (flag if late else "")
    if layers is None or not layers.admitted.count:
        checks.append(Check(target, name, "no server-side figures; " + client_p99, None))
    else:
        p99 = layers.admitted.p99_ms
        checks.append(Check(target, name, f"{_ms(p99)}; {client_p99}", p99 <= ADMITTED_P99_MS))
    name = f"refusal p99 <= {REFUSAL_P99_MS:g} ms, server side"
    client_p99 = f"client side {_ms(s.rejection_p99_ms)}" + (flag if late else "")
    if layers is None:
        checks.append(Check(target, name, "no server-side figures; " + client_p99, None))
    elif not layers.refused_all.count:
        checks.append(Check(target, name, "no refusals", True))
    else:
        every = layers.refused_all
        checks.append(
            Check(
                target,
                name,
                f"{_ms(every.p99_ms)} over {every.count} refusals; {client_p99}",
                every.p99_ms <= REFUSAL_P99_MS,
            )
        )
    return checks


def _overload(sluice: DeploymentResult) -> list[Check]:
    checks = []
    peak = sluice.peak_goodput
    for multiple in OVERLOAD:
        label = multiple_label(multiple)
        run = _level(sluice, label)
        if run is None:
            checks.append(
                Check(f"3. overload at {label}", "every overload check", "not measured", None)
            )
        else:
            checks += _overload_level(run, label=label, peak=peak)
    return checks


def light_served(group: Group, *, server_side: bool) -> tuple[int, int] | None:
    """(requests served 2xx within the latency target, requests scheduled) of a group.

    Server side counts what nginx answered 2xx within the target; a request nginx
    never logged counts as not served.
    """
    if server_side:
        if group.server is None:
            return None
        return group.server.admitted_within_target, group.summary.scheduled
    return group.summary.ok_within_target, group.summary.scheduled


def _fairness(sluice: DeploymentResult) -> list[Check]:
    target = "4. fairness"
    checks = []
    name = (
        f"light clients: >= {LIGHT_SERVED_MIN:.0%} of their requests 2xx within "
        f"{LATENCY_TARGET_MS:g} ms"
    )
    run = sluice.fairness
    light = run.groups.get("light") if run is not None else None
    if run is None or light is None:
        checks.append(Check(target, name, "not measured", None))
    else:
        late = lagged(run)
        served = light_served(light, server_side=late)
        client = light_served(light, server_side=False)
        assert client is not None
        client_text = f"{client[0]} of {client[1]} = {client[0] / max(1, client[1]):.2%}"
        if late and served is None:
            checks.append(Check(target, name, f"client side {client_text}, generator lagged", None))
        elif late:
            assert served is not None
            share = served[0] / max(1, served[1])
            checks.append(
                Check(
                    target,
                    name,
                    f"server side {served[0]} of {served[1]} = {share:.2%}; client side "
                    f"{client_text} (generator lag p99 {_ms(run.summary.lag_p99_ms)})",
                    share >= LIGHT_SERVED_MIN,
                )
            )
        else:
            share = client[0] / max(1, client[1])
            checks.append(Check(target, name, client_text, share >= LIGHT_SERVED_MIN))
    lone = sluice.lone_client
    name = "a lone client with workers x L requests in flight on the idle stack: never refused"
    if lone is None:
        checks.append(Check(target, name, "not measured", None))
    else:
        s = lone.summary
        others = s.errors - s.rejected_total
        checks.append(
            Check(
                target,
                name,
                f"{s.rejected_total} refused of {s.scheduled} ({lone.label}; "
                f"{others} other non-2xx)",
                s.rejected_total == 0,
            )
        )
    return checks


def issue20(result: BenchResult) -> list[Check]:
    """Issue 20's measured targets 1-4 (target 5 is 1-3 in a --one-core run)."""
    sluice, plain = result.deployments[0], result.deployments[1]
    fixed = bool(result.options.rates)
    checks = _capacity(sluice, plain, fixed)
    if fixed:
        checks.append(
            Check("2.-3. levels", "levels at multiples of plain's capacity", "--rates", None)
        )
    else:
        checks += _below(sluice) + _overload(sluice)
    return checks + _fairness(sluice)


# --------------------------------------------------------------------------
# Issue 21


def cpu_per_request(run: Run) -> float:
    """CPU ms per request sent of the whole stack: app, nginx + PgBouncer, PostgreSQL."""
    cpu = run.cpu_ms_per_request
    return sum(cpu.get(group, 0.0) for group in ("app", "proxies", "postgres"))


def at_rate(deployment: DeploymentResult, rate: float) -> Run | None:
    return next((r for r in deployment.levels if math.isclose(r.rate, rate)), None)


def issue21(result: BenchResult) -> list[Check]:
    """Issue 21's measured targets 1, 3 and 4: the current code against the baseline."""
    current, baseline = result.deployments[0], result.deployments[1]
    rev = baseline.name
    checks = []
    for kind, limit in MAX_STATEMENTS.items():
        name = f"at most {limit:g} statements per {kind} (PgBouncer total_query_count)"
        mine = current.statements.get(kind)
        theirs = baseline.statements.get(kind)
        if mine is None or not mine.ok:
            checks.append(Check("1. statements", name, "not measured", None))
            continue
        before = f"; {rev}: {theirs.per_request:.2f}" if theirs and theirs.ok else ""
        checks.append(
            Check(
                "1. statements",
                name,
                f"{mine.per_request:.2f} ({mine.queries} over {mine.ok} requests){before}",
                mine.per_request <= limit,
            )
        )
    mine_run, their_run = at_rate(current, CPU_RATE), at_rate(baseline, CPU_RATE)
    name = f"stack CPU per request at {CPU_RATE:g} rps <= {CPU_RATIO_MAX:g} x {rev}'s"
    if mine_run is None or their_run is None or not cpu_per_request(their_run):
        checks.append(Check("3. CPU per request", name, "not measured", None))
    else:
        mine_cpu, their_cpu = cpu_per_request(mine_run), cpu_per_request(their_run)
        checks.append(
            Check(
                "3. CPU per request",
                name,
                f"{mine_cpu:.2f} vs {their_cpu:.2f} ms = {mine_cpu / their_cpu:.2f} x",
                mine_cpu <= CPU_RATIO_MAX * their_cpu,
            )
        )
    name = f"peak goodput >= {PEAK_RATIO_MIN:g} x {rev}'s"
    if not baseline.peak_goodput:
        checks.append(Check("4. peak goodput", name, "not measured", None))
    else:
        ratio = current.peak_goodput / baseline.peak_goodput
        checks.append(
            Check(
                "4. peak goodput",
                name,
                f"{current.peak_goodput:.1f} vs {baseline.peak_goodput:.1f} rps = {ratio:.2f} x",
                ratio >= PEAK_RATIO_MIN,
            )
        )
    return checks


def verdict(met: bool | None, *, unjudged: str = "-") -> str:
    return unjudged if met is None else ("PASS" if met else "**FAIL**")


def tally(checks: Sequence[Check]) -> str:
    """ "N PASS, M FAIL, K not judged"."""
    passed = sum(c.met is True for c in checks)
    failed = sum(c.met is False for c in checks)
    unjudged = sum(c.met is None for c in checks)
    return f"{passed} PASS, {failed} FAIL, {unjudged} not judged"
