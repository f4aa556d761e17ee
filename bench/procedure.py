"""`python -m bench`: calibrate; find both deployments' capacity; run levels at multiples
of the plain deployment's capacity against both, the fairness scenario and the
lone-client check; report (issue 20). With --baseline REV: the current stack
beside REV's (bench.comparison, issue 21).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import plan, publish, report, schedule, workload
from bench.comparison import run_comparison
from bench.criteria import CAPACITY_MIN_OK, DEFAULT_MULTIPLES, LATENCY_TARGET_MS, LIGHT_CLIENTS
from bench.results import BenchResult, DeploymentResult, Options
from bench.runner import (
    SLUICE_LIMITS,
    Contender,
    Load,
    Session,
    calibrate_generator,
    current_stack,
    measure,
    new_result,
    open_load,
    progress,
    seed,
    start_session,
    stops_early,
    warm_up,
)
from bench.search import CapacitySearch
from bench.targets import (
    TargetError,
    plain_environment,
    plain_server,
    sluice_deployment,
)
from deploy.layout import ROOT

RESULTS = ROOT / "bench" / "results"
# A search step only needs a usable server afterwards, not the drain time.
SEARCH_DRAIN_TIMEOUT_S = 10.0


def accounts(options: Options) -> int:
    """Client accounts to sign up: --clients, and enough for the fairness scenario."""
    return max(options.clients, 1 + LIGHT_CLIENTS if options.fairness else 1)


# --------------------------------------------------------------------------
# The runs


def find_capacities(session: Session, contenders: list[Contender], *, ceiling: float) -> None:
    """Each contender's capacity search, one step of each in turn (drift hits all alike)."""
    options = session.options
    searches = {
        c.name: CapacitySearch(
            start=options.search_start,
            max_rate=ceiling,
            resolution=options.search_resolution,
            max_steps=options.search_steps,
        )
        for c in contenders
    }
    session.say(
        f"capacity search of {', '.join(searches)}, a step of each in turn "
        f"(>= {CAPACITY_MIN_OK:.0%} 2xx, 2xx p99 <= {options.target_p99_ms:g} ms)"
    )
    active = list(contenders)
    while active:
        for contender in list(active):
            search = searches[contender.name]
            rate = search.next_rate()
            if rate is None:
                active.remove(contender)
                continue
            load = open_load(
                session,
                contender,
                label="search",
                rate=rate,
                duration_s=options.search_duration_s,
            )
            run = measure(session, contender, load, drain_timeout_s=SEARCH_DRAIN_TIMEOUT_S)
            contender.result.search.append(run)
            search.record(rate, run.passed)
    for contender in contenders:
        contender.result.capacity = searches[contender.name].capacity
        session.say(f"{contender.name}: capacity {contender.result.capacity:.0f} rps")


def run_levels(
    session: Session, contenders: list[Contender], levels: list[tuple[str, float]]
) -> None:
    """Each level against every contender in turn, then the next level."""
    by_name = {c.name: c for c in contenders}
    for name, label, rate in plan.interleave(list(by_name), levels):
        contender = by_name[name]
        load = open_load(
            session, contender, label=label, rate=rate, duration_s=session.options.duration_s
        )
        contender.result.levels.append(measure(session, contender, load))


def fairness_load(session: Session, contender: Contender, *, capacity: float) -> Load:
    """One heavy client (client 0) beside LIGHT_CLIENTS light ones (clients 1..19)."""
    heavy_rate, light_rate = plan.fairness_rates(capacity)
    duration = session.options.duration_s
    run_id = session.run_id(contender.name, "fairness")
    light = list(range(1, 1 + LIGHT_CLIENTS))
    streams = []
    for part, rate, clients in (("h", heavy_rate, [0]), ("l", light_rate, light)):
        offsets = schedule.uniform_offsets(rate, duration)
        requests = workload.build_requests(
            len(offsets),
            run_id=f"{run_id}-{part}",
            seed=session.options.seed + session.runs,
            tokens=[contender.tokens[c] for c in clients],
            clients=clients,
        )
        streams.append((offsets, requests))
    offsets, requests = workload.merge(*streams)
    return Load(
        label="fairness",
        rate=heavy_rate + light_rate,
        duration_s=duration,
        run_id=run_id,
        requests=requests,
        offsets=offsets,
        groups={"heavy": frozenset({0}), "light": frozenset(light)},
    )


def lone_client_load(session: Session, contender: Contender, *, in_flight: int) -> Load:
    """Client 0 alone, keeping `in_flight` requests in flight (a closed loop)."""
    duration = session.options.lone_client_s
    run_id = session.run_id(contender.name, "lone")
    # More than a closed loop can send: each request takes a few milliseconds at least.
    count = max(100, int(in_flight * duration * 500))
    requests = workload.build_requests(
        count, run_id=run_id, seed=session.options.seed, tokens=contender.tokens[:1]
    )
    return Load(
        label=f"lone client, {in_flight} in flight",
        rate=0.0,
        duration_s=duration,
        run_id=run_id,
        requests=requests,
        concurrency=in_flight,
    )


def slots(env: dict[str, str]) -> int:
    """workers x L of a running stack, from what it publishes."""
    return int(env["SLUICE_WORKERS"]) * int(env["SLUICE_MAX_IN_FLIGHT"])


# --------------------------------------------------------------------------
# The whole procedure


def run_bench(options: Options) -> BenchResult:
    t0 = time.monotonic()
    sluice = DeploymentResult(
        "sluice",
        "nginx -> gunicorn (admission control) -> PgBouncer -> PostgreSQL, "
        "sized by service/sizing.py",
    )
    plain = DeploymentResult(
        "plain",
        f"uvicorn --workers {options.workers} straight to PostgreSQL: "
        "pool 5+10, pool_timeout 30 s, 40 threads, no admission control, no nginx",
    )
    result = new_result(options, [sluice, plain])
    session = start_session(options, result)
    search_ceiling = calibrate_generator(session, result)
    emails = workload.client_emails(accounts(options))
    with stops_early(result), current_stack(options, sluice) as stack:
        dsn = stack.database_url
        progress(f"{len(emails)} clients signed up, {seed(stack.url, dsn, emails)} items seeded")
        env = plain_environment(
            postgres_port=stack.ports["postgres"],
            db_user=stack.env.get("SLUICE_DB_USER", "sluice"),
            db_password=stack.environment["SLUICE_DB_PASSWORD"],
            db_name=stack.env.get("SLUICE_DB_NAME", "sluice"),
        )
        mine = Contender(
            sluice, sluice_deployment(stack.env), workload.log_in(stack.url, emails), dsn
        )
        progress(f"starting the plain deployment on port {options.plain_port}")
        with plain_server(
            port=options.plain_port,
            workers=options.workers,
            env=env,
            log=options.out / "plain-uvicorn.log",
            postgres_pid=stack.pid("postgres"),
        ) as target:
            # Its pool: SLUICE_MAX_IN_FLIGHT sizes it (no admission, anyio's threads).
            plain.settings = {
                k: env[k]
                for k in SLUICE_LIMITS
                if k in env and k.startswith(("SLUICE_DB", "SLUICE_MAX_IN_FLIGHT"))
            }
            plain.settings["workers"] = str(options.workers)
            theirs = Contender(plain, target, workload.log_in(target.url, emails), dsn)
            compare(
                session,
                result,
                [mine, theirs],
                ceiling=search_ceiling,
                in_flight=slots(stack.env),
            )
    result.elapsed_s = time.monotonic() - t0
    return result


def compare(
    session: Session,
    result: BenchResult,
    contenders: list[Contender],
    *,
    ceiling: float,
    in_flight: int,
) -> None:
    """Issue 20's runs: lone client, capacity searches, levels, fairness."""
    options = session.options
    mine, theirs = contenders
    for contender in contenders:
        warm_up(session, contender)
    progress(f"sluice: lone client, {in_flight} requests in flight (workers x L), idle stack")
    mine.result.lone_client = measure(
        session, mine, lone_client_load(session, mine, in_flight=in_flight)
    )
    if options.rates:
        progress("fixed rates, no capacity search")
        levels = plan.fixed_levels(options.rates)
    else:
        find_capacities(session, contenders, ceiling=ceiling)
        if theirs.result.capacity <= 0:
            theirs.result.error = "met the capacity criterion at no tried rate; see the report"
            raise TargetError(f"plain: {theirs.result.error}")
        levels = plan.levels(options.multiples, theirs.result.capacity)
    progress(f"levels: {', '.join(f'{label} = {rate:g} rps' for label, rate in levels)}")
    run_levels(session, contenders, levels)
    if options.fairness and not options.rates:
        heavy, light = plan.fairness_rates(theirs.result.capacity)
        progress(f"fairness: one client at {heavy:g} rps beside {LIGHT_CLIENTS} at {light:g}")
        for contender in contenders:
            contender.result.fairness = measure(
                session,
                contender,
                fairness_load(session, contender, capacity=theirs.result.capacity),
            )
    session.record_cpus(contenders, result)


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Overload benchmark: Sluice side by side with a plain deployment "
        "(docs/benchmark.md).",
    )
    parser.add_argument("--quick", action="store_true", help="short steps: a smoke test")
    parser.add_argument("--duration", type=float, help="seconds per measured level")
    parser.add_argument("--search-duration", type=float, help="seconds per search step")
    parser.add_argument(
        "--target-p99-ms",
        type=float,
        default=LATENCY_TARGET_MS,
        help="capacity criterion on 2xx p99 (default: issue 20's %(default)g ms)",
    )
    parser.add_argument(
        "--multiples",
        default=",".join(f"{m:g}" for m in DEFAULT_MULTIPLES),
        help="levels, x the plain deployment's capacity (default %(default)s)",
    )
    parser.add_argument(
        "--rates",
        default="",
        help="fixed levels in requests/s (e.g. 150,300,600,1200) instead of the capacity "
        "search and --multiples: the same rates for both deployments, to compare runs. "
        f"With --baseline: the ladder (default {','.join(f'{r:g}' for r in plan.DEFAULT_LADDER)})",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="client timeout, seconds")
    parser.add_argument("--max-in-flight", type=int, default=1000, help="generator connections")
    parser.add_argument(
        "--generator-priority",
        choices=["idle", "normal"],
        default="idle",
        help="idle (default): the load generator runs SCHED_IDLE, on the CPU the servers leave, "
        "as real clients would not share their cores (its lateness is measured and reported); "
        "normal: the servers' priority",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--port-base", type=int, default=26100)
    parser.add_argument("--plain-port", type=int, default=26150)
    parser.add_argument("--calibration-port", type=int, default=26190)
    parser.add_argument("--no-calibration", action="store_true")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--clients",
        type=int,
        default=20,
        help="clients, each an account with one bearer token and its own source address "
        "(127.0.0.10 + i); 1 = every request from one client",
    )
    parser.add_argument(
        "--state", type=Path, default=ROOT / ".sluice-bench", help="the Sluice stack's state dir"
    )
    parser.add_argument("--out", type=Path, help="results directory")
    parser.add_argument(
        "--sluice-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting for the Sluice stack, e.g. SLUICE_SERVICE_TIME_MS=40 (repeatable)",
    )
    parser.add_argument(
        "--one-core",
        action="store_true",
        help="each deployment's processes on one core, the generator on another",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        default="",
        help="run REV's stack (a git worktree) beside the current code at the same rates: "
        "statements and CPU per request, goodput (issue 21); no plain deployment",
    )
    parser.add_argument(
        "--baseline-port-base",
        type=int,
        help="the baseline stack's port base (default: --port-base + 20)",
    )
    parser.add_argument(
        "--statement-requests",
        type=int,
        default=100,
        help="--baseline: reads, then creates, counted through PgBouncer (default 100 each)",
    )
    parser.add_argument(
        "--no-fairness", action="store_true", help="skip the heavy-and-light clients scenario"
    )
    parser.add_argument(
        "--publish",
        type=Path,
        metavar="DIR",
        help="after the run, copy the plots and the summary to DIR (e.g. docs/bench) "
        "with the command, commit and date (also: python -m bench.publish RESULTS DIR)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= workload.MAX_CLIENTS:
        parser.error(f"--clients wants 1 to {workload.MAX_CLIENTS}, got {args.clients}")
    if args.statement_requests < 1:
        parser.error("--statement-requests wants at least 1")
    overrides = {}
    for item in args.sluice_set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--sluice-set wants KEY=VALUE, got {item!r}")
        overrides[key] = value
    try:
        multiples = tuple(float(m) for m in args.multiples.split(",") if m.strip())
        rates = tuple(float(r) for r in args.rates.split(",") if r.strip())
        plan.levels(multiples, 1.0)
        if rates:
            plan.fixed_levels(rates)
    except ValueError as exc:
        parser.error(str(exc))
    if args.baseline and not rates:
        rates = plan.DEFAULT_LADDER
    quick = args.quick
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Options(
        quick=quick,
        duration_s=args.duration or (3.0 if quick else 30.0),
        search_duration_s=args.search_duration or (2.0 if quick else 8.0),
        calibration_duration_s=1.5 if quick else 4.0,
        warm_up_s=1.0 if quick else 3.0,
        calibration_rates=(
            (250.0, 500.0, 1000.0)
            if quick
            else (500.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0)
        ),
        multiples=multiples,
        rates=rates,
        target_p99_ms=args.target_p99_ms,
        timeout_s=args.timeout,
        max_in_flight=args.max_in_flight,
        search_start=50.0,
        search_steps=6 if quick else 16,
        search_resolution=0.25 if quick else 0.05,
        workers=args.workers,
        port_base=args.port_base,
        plain_port=args.plain_port,
        calibration_port=args.calibration_port,
        drain_timeout_s=10.0 if quick else 30.0,
        seed=args.seed,
        out=args.out or RESULTS / stamp,
        calibrate=not args.no_calibration,
        clients=args.clients,
        state=args.state.resolve(),
        sluice_overrides=overrides,
        one_core=args.one_core,
        generator_idle=args.generator_priority == "idle",
        baseline=args.baseline,
        baseline_port_base=args.baseline_port_base or args.port_base + 20,
        statement_requests=args.statement_requests,
        lone_client_s=2.0 if quick else 5.0,
        fairness=not args.no_fairness and not args.baseline,
        publish=args.publish,
        command=("python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)),
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    result = run_comparison(options) if options.baseline else run_bench(options)
    text = report.write(result, options.out)
    print(text, flush=True)
    print(f"report: {options.out / 'report.md'}", flush=True)
    if options.publish is not None:
        for path in publish.publish(options.out, options.publish):
            print(f"published: {path}", flush=True)
    failed = [d.name for d in result.deployments if d.error]
    if failed or result.error:
        print(f"incomplete: {', '.join(failed) or result.error} (see the report)", file=sys.stderr)
        return 1
    return 0
