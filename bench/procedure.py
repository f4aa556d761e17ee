"""`python -m bench`: calibrate, find capacity, run 0.5x..4x against both deployments, report."""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import calibrate, database, loadgen, report, schedule, workload
from bench.results import BenchResult, DeploymentResult, Options, Run
from bench.search import CapacitySearch
from bench.serverside import ServerRecorder
from bench.stats import meets_target, summarize
from bench.targets import (
    Deployment,
    RssSampler,
    TargetError,
    plain_environment,
    plain_server,
    sluice_deployment,
    sluice_stack,
)
from deploy.layout import ROOT
from deploy.stack import RunningStack

RESULTS = ROOT / "bench" / "results"
WARM_UP_RATE = 20.0
# A search step only needs a usable server afterwards, not the drain time.
SEARCH_DRAIN_TIMEOUT_S = 10.0
# The limits in force, copied into the report.
SLUICE_LIMITS = (
    "SLUICE_WORKERS",
    "SLUICE_MAX_IN_FLIGHT",
    "SLUICE_QUEUE_LENGTH",
    "SLUICE_QUEUE_WAIT_MS",
    "SLUICE_SERVICE_TIME_MS",
    "SLUICE_DB_MAX_OVERFLOW",
    "SLUICE_DB_POOL_TIMEOUT_S",
    "PGBOUNCER_DEFAULT_POOL_SIZE",
    "NGINX_RATE_PER_CLIENT",
    "NGINX_BURST_PER_CLIENT",
    "NGINX_MAX_CONNS",
)


def progress(message: str) -> None:
    print(message, flush=True)


def seed(stack: RunningStack, emails: Sequence[str]) -> int:
    """The benchmark's clients and their seeded items, in a freshly started stack."""
    workload.sign_up(stack.url, emails)
    return database.seed_items(stack.database_url, emails=emails, count=workload.SEEDED_ITEMS)


# --------------------------------------------------------------------------
# One measured run


def wait_until_idle(url: str, token: str, *, timeout_s: float) -> float | None:
    """Seconds until a small read is answered 2xx promptly three times in a row.

    A server may still be working through requests whose clients gave up; the
    next run must not start into that backlog.
    """
    start = time.monotonic()
    probe = urllib.request.Request(
        f"{url}{workload.PROBE_PATH}",
        headers={"Authorization": f"Bearer {token}"},
    )
    streak = 0
    while time.monotonic() - start < timeout_s:
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(probe, timeout=2) as response:
                response.read()
                prompt = response.status == 200 and time.monotonic() - sent < 0.25
        except (OSError, urllib.error.URLError):
            prompt = False
        streak = streak + 1 if prompt else 0
        if streak >= 3:
            return time.monotonic() - start
        time.sleep(0.2)
    return None


def _settled_titles(dsn: str, run_id: str) -> dict[str, int]:
    """This run's rows, once their number stops changing (late commits land)."""
    previous = database.bench_titles(dsn, run_id)
    for _ in range(10):
        time.sleep(0.3)
        current = database.bench_titles(dsn, run_id)
        if current == previous:
            break
        previous = current
    return dict(previous)


def measure(
    target: Deployment,
    *,
    tokens: Sequence[str],
    dsn: str,
    rate: float,
    duration_s: float,
    label: str,
    options: Options,
    sequence: int,
    drain_timeout_s: float | None = None,
) -> Run:
    run_id = f"{target.name}-{label}-{sequence}".replace(".", "_")
    offsets = schedule.uniform_offsets(rate, duration_s)
    requests = workload.build_requests(
        len(offsets), run_id=run_id, seed=options.seed + sequence, tokens=tokens
    )
    recorder = ServerRecorder(
        access_log=target.access_log,
        metrics_url=target.metrics_url,
        ignore_uri=workload.PROBE_PATH,
    )
    recorder.start()
    with RssSampler(target.rss_roots) as rss:
        result = loadgen.run(
            target.url,
            requests,
            offsets,
            max_in_flight=options.max_in_flight,
            timeout_s=options.timeout_s,
        )
    drain_limit = drain_timeout_s or options.drain_timeout_s
    drain = wait_until_idle(target.url, tokens[0], timeout_s=drain_limit)
    server = recorder.finish()
    summary = summarize(result.outcomes, offered_rps=rate, duration_s=duration_s)
    rejected = ", ".join(f"{c}:{s.count}" for c, s in summary.rejected.items()) or "0"
    progress(
        f"  {target.name:6} {label:>6} {rate:7.0f} rps: goodput {summary.goodput_rps:7.1f}, "
        f"2xx p50/p99 {summary.ok_p50_ms:6.1f}/{summary.ok_p99_ms:7.1f} ms, "
        f"rejected {rejected}, timeouts {summary.timeouts}, not sent {summary.not_sent}, "
        f"errors {summary.server_errors + sum(summary.client_errors.values())}, "
        f"lag p99 {summary.lag_p99_ms:.1f} ms"
        + ("" if drain is not None else ", server still busy after the run")
    )
    restarted = drain is None and target.restart is not None
    if restarted:
        assert target.restart is not None
        progress(
            f"  {target.name} not answering {options.drain_timeout_s:g} s later: restarting it"
        )
        target.restart()  # also ends its transactions: no commit lands after the check
    integrity = database.check_integrity(result.outcomes, _settled_titles(dsn, run_id))
    database.delete_bench_rows(dsn)
    if restarted:
        warm_up(target, tokens=tokens, dsn=dsn, options=options)
    return Run(
        deployment=target.name,
        label=label,
        rate=rate,
        summary=summary,
        integrity=integrity,
        rss_peak_mb=dict(rss.peak_mb),
        cpu_ms_per_request={
            name: seconds * 1000 / max(1, summary.sent)
            for name, seconds in {**rss.cpu_s, "generator": result.cpu_s}.items()
        },
        generator_cpu=result.cpu_s / result.wall_s if result.wall_s else 0.0,
        drain_s=drain,
        passed=meets_target(summary, p99_ms=options.target_p99_ms),
        restarted=restarted,
        server=server,
    )


def warm_up(target: Deployment, *, tokens: Sequence[str], dsn: str, options: Options) -> None:
    """A few seconds of light load, not recorded: connections, caches, lazy imports."""
    offsets = schedule.uniform_offsets(WARM_UP_RATE, options.warm_up_s)
    requests = workload.build_requests(
        len(offsets), run_id=f"{target.name}-warmup", seed=0, tokens=tokens
    )
    loadgen.run(
        target.url,
        requests,
        offsets,
        max_in_flight=options.max_in_flight,
        timeout_s=options.timeout_s,
    )
    wait_until_idle(target.url, tokens[0], timeout_s=options.drain_timeout_s)
    _settled_titles(dsn, f"{target.name}-warmup")
    database.delete_bench_rows(dsn)


def find_capacity(
    target: Deployment,
    *,
    tokens: Sequence[str],
    dsn: str,
    options: Options,
    ceiling: float,
    first: int,
) -> tuple[float, list[Run]]:
    search = CapacitySearch(
        start=options.search_start,
        max_rate=ceiling,
        resolution=options.search_resolution,
        max_steps=options.search_steps,
    )
    runs = []
    sequence = first
    while (rate := search.next_rate()) is not None:
        run = measure(
            target,
            tokens=tokens,
            dsn=dsn,
            rate=rate,
            duration_s=options.search_duration_s,
            label="search",
            options=options,
            sequence=sequence,
            drain_timeout_s=SEARCH_DRAIN_TIMEOUT_S,
        )
        sequence += 1
        runs.append(run)
        search.record(rate, run.passed)
    return search.capacity, runs


def run_deployment(
    result: DeploymentResult,
    target: Deployment,
    *,
    tokens: Sequence[str],
    dsn: str,
    options: Options,
    ceiling: float,
    rates: list[tuple[str, float]] | None,
) -> list[tuple[str, float]]:
    """Capacity search, then the levels (the given rates, or multiples of this capacity).

    With fixed rates (--rates) there is no search: the levels are those rates.
    """
    warm_up(target, tokens=tokens, dsn=dsn, options=options)
    sequence = 1000 if target.name == "plain" else 0
    if options.rates:
        rates = [(f"{rate:g} rps", rate) for rate in options.rates]
        progress(f"{target.name}: fixed rates, no capacity search")
    else:
        progress(f"{target.name}: capacity search (target: 2xx p99 <= {options.target_p99_ms} ms)")
        result.capacity, result.search = find_capacity(
            target, tokens=tokens, dsn=dsn, options=options, ceiling=ceiling, first=sequence
        )
        progress(f"{target.name}: capacity {result.capacity:.0f} rps")
    if rates is None:
        if result.capacity <= 0:
            raise TargetError(f"{target.name} met the target at no tried rate; see the report")
        rates = [(f"{m:g}x", m * result.capacity) for m in options.multiples]
    for index, (label, rate) in enumerate(rates):
        result.levels.append(
            measure(
                target,
                tokens=tokens,
                dsn=dsn,
                rate=rate,
                duration_s=options.duration_s,
                label=label,
                options=options,
                sequence=sequence + 100 + index,
            )
        )
    return rates


# --------------------------------------------------------------------------
# The whole procedure


def run_bench(options: Options) -> BenchResult:
    started = datetime.now(UTC)
    t0 = time.monotonic()
    result = BenchResult(
        options=options,
        started=started,
        machine=report.machine_info(),
        calibration=[],
        ceiling=0.0,
        deployments=[
            DeploymentResult(
                "sluice",
                "nginx -> gunicorn (admission control) -> PgBouncer -> PostgreSQL, "
                "sized by service/sizing.py",
            ),
            DeploymentResult(
                "plain",
                f"uvicorn --workers {options.workers} straight to PostgreSQL: "
                "pool 5+10, pool_timeout 30 s, 40 threads, no admission control, no nginx",
            ),
        ],
    )
    if options.calibrate:
        progress("generator calibration against a trivial nginx target")
        result.ceiling, result.calibration = calibrate.calibrate(
            port=options.calibration_port,
            rates=options.calibration_rates,
            duration_s=options.calibration_duration_s,
            max_in_flight=options.max_in_flight,
            timeout_s=options.timeout_s,
            progress=progress,
        )
        progress(f"generator ceiling: {result.ceiling:.0f} rps")
    search_ceiling = result.ceiling or max(options.calibration_rates)
    sluice, plain = result.deployments
    state = options.state
    emails = workload.client_emails(options.clients)
    progress(f"starting the Sluice stack (port base {options.port_base}, state {state})")
    with sluice_stack(
        port_base=options.port_base,
        state=state,
        postgres_max_connections=60,
        overrides=options.sluice_overrides,
    ) as stack:
        dsn = stack.database_url
        sluice.settings = {k: stack.env[k] for k in SLUICE_LIMITS if k in stack.env}
        progress(f"{len(emails)} clients signed up, {seed(stack, emails)} items seeded")
        rates = None
        try:
            rates = run_deployment(
                sluice,
                sluice_deployment(stack),
                tokens=workload.log_in(stack.url, emails),
                dsn=dsn,
                options=options,
                ceiling=search_ceiling,
                rates=None,
            )
        except (TargetError, workload.WorkloadError) as exc:
            sluice.error = str(exc)
            progress(f"sluice: {exc}")
        env = plain_environment(
            postgres_port=stack.ports["postgres"],
            db_user=stack.env.get("SLUICE_DB_USER", "sluice"),
            db_password=stack.environment["SLUICE_DB_PASSWORD"],
            db_name=stack.env.get("SLUICE_DB_NAME", "sluice"),
        )
        progress(f"starting the plain deployment on port {options.plain_port}")
        try:
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
                run_deployment(
                    plain,
                    target,
                    tokens=workload.log_in(target.url, emails),
                    dsn=dsn,
                    options=options,
                    ceiling=search_ceiling,
                    rates=rates,
                )
        except (TargetError, workload.WorkloadError) as exc:
            plain.error = str(exc)
            progress(f"plain: {exc}")
    result.elapsed_s = time.monotonic() - t0
    return result


def parse_options(argv: list[str] | None) -> Options:
    from service.settings import get_settings

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
        default=float(get_settings().target_latency_ms),
        help="capacity criterion on 2xx p99 (default: SLUICE_TARGET_LATENCY_MS)",
    )
    parser.add_argument("--multiples", default="0.5,1,2,4", help="levels, x capacity")
    parser.add_argument(
        "--rates",
        default="",
        help="fixed levels in requests/s (e.g. 150,300,600,1200) instead of the capacity "
        "search and --multiples: the same rates for both deployments, to compare runs",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="client timeout, seconds")
    parser.add_argument("--max-in-flight", type=int, default=1000, help="generator connections")
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
        help="client accounts, one bearer token each; 1 = every request from one client",
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
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error(f"--clients wants at least 1, got {args.clients}")
    overrides = {}
    for item in args.sluice_set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--sluice-set wants KEY=VALUE, got {item!r}")
        overrides[key] = value
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
        multiples=tuple(float(m) for m in args.multiples.split(",")),
        rates=tuple(float(r) for r in args.rates.split(",") if r.strip()),
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
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    result = run_bench(options)
    text = report.write(result, options.out)
    print(text, flush=True)
    print(f"report: {options.out / 'report.md'}", flush=True)
    failed = [d.name for d in result.deployments if d.error]
    if failed:
        print(f"incomplete: {', '.join(failed)} (see the report)", file=sys.stderr)
        return 1
    return 0
