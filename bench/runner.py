"""One measured run, and what every run of a benchmark shares.

A `Load` says what a run sends (an open-loop schedule, or a closed loop of N
requests in flight); `measure` sends it to one `Contender` and returns the
`Run`: the client's outcomes, what nginx and the app recorded, memory and CPU
of each process tree, how long the server took to drain, and the integrity
check of every acknowledged write against PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench import affinity, calibrate, database, loadgen, publish, report, schedule, workload
from bench.affinity import CorePlan
from bench.criteria import CAPACITY_MIN_OK
from bench.loadgen import Request
from bench.results import BenchResult, DeploymentResult, Group, Options, Run
from bench.serverside import ServerRecorder
from bench.stats import meets_target, split_by_client, summarize
from bench.targets import Deployment, RssSampler, TargetError, sluice_stack
from deploy.stack import RunningStack

WARM_UP_RATE = 20.0
# PostgreSQL's max_connections for the stacks: the plain deployment's default
# pools (workers x (5 + 10)) beside PgBouncer's.
POSTGRES_MAX_CONNECTIONS = 60
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
    "NGINX_MAX_CONNS_PER_CLIENT",
)


def progress(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class Load:
    """What one run sends. `offsets` None: a closed loop of `concurrency` requests in flight."""

    label: str
    rate: float  # offered requests/s (open loop); 0 for a closed loop
    duration_s: float
    run_id: str  # in every title it creates, for the integrity check
    requests: list[Request]
    offsets: list[float] | None = None
    concurrency: int = 0
    groups: Mapping[str, frozenset[int]] = field(default_factory=dict)  # reported apart

    @property
    def sources(self) -> list[str]:
        """Each client's source address, by client index."""
        return workload.client_addresses(1 + max((r.client for r in self.requests), default=0))


@dataclass
class Contender:
    """A deployment under test, and what driving it takes."""

    result: DeploymentResult
    target: Deployment
    tokens: list[str]  # one per client, logged in at this deployment
    dsn: str  # its PostgreSQL, as superuser: the integrity check and cleanup

    @property
    def name(self) -> str:
        return self.result.name


@dataclass
class Session:
    """What every run of one benchmark shares: options, the core plan, a run counter."""

    options: Options
    cores: CorePlan | None = None  # --one-core
    say: Callable[[str], None] = progress
    runs: int = 0  # runs started so far: each its own id and request seed

    def run_id(self, name: str, label: str) -> str:
        self.runs += 1
        return f"{name}-{label}-{self.runs}".replace(".", "_").replace(" ", "")

    def pin(self, target: Deployment) -> None:
        """--one-core: (re-)pin every process tree of `target` to the servers' core."""
        if self.cores is not None:
            affinity.pin_trees(target.roots, self.cores.servers)

    def record_cpus(self, contenders: Sequence[Contender], result: BenchResult) -> None:
        """Where each contender's threads, and the generator's, may run: for the report."""
        for contender in contenders:
            found = affinity.affinities(contender.target.roots)
            contender.result.cpus = affinity.describe(found)
        own = affinity.affinities([os.getpid()], trees=False)  # the stacks are its children
        result.generator_cpus = affinity.describe(own)


def open_load(
    session: Session,
    contender: Contender,
    *,
    label: str,
    rate: float,
    duration_s: float,
) -> Load:
    """The workload at a fixed rate, from the first --clients clients."""
    run_id = session.run_id(contender.name, label)
    offsets = schedule.uniform_offsets(rate, duration_s)
    requests = workload.build_requests(
        len(offsets),
        run_id=run_id,
        seed=session.options.seed + session.runs,
        tokens=contender.tokens[: session.options.clients],
    )
    return Load(label, rate, duration_s, run_id, requests, offsets)


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


def settled_titles(dsn: str, run_id: str) -> dict[str, int]:
    """This run's rows, once their number stops changing (late commits land)."""
    previous = database.bench_titles(dsn, run_id)
    for _ in range(10):
        time.sleep(0.3)
        current = database.bench_titles(dsn, run_id)
        if current == previous:
            break
        previous = current
    return dict(previous)


def drive(target: Deployment, load: Load, *, options: Options) -> loadgen.LoadResult:
    """Send `load` to `target`, each client from its own address."""
    if load.offsets is None:
        return loadgen.run_closed(
            target.url,
            load.requests,
            concurrency=load.concurrency,
            duration_s=load.duration_s,
            timeout_s=options.timeout_s,
            sources=load.sources,
            idle=options.generator_idle,
        )
    return loadgen.run(
        target.url,
        load.requests,
        load.offsets,
        max_in_flight=options.max_in_flight,
        timeout_s=options.timeout_s,
        sources=load.sources,
        idle=options.generator_idle,
    )


def measure(
    session: Session,
    contender: Contender,
    load: Load,
    *,
    drain_timeout_s: float | None = None,
) -> Run:
    options, target, dsn = session.options, contender.target, contender.dsn
    session.pin(target)
    recorder = ServerRecorder(
        access_log=target.access_log,
        metrics_url=target.metrics_url,
        ignore_uri=workload.PROBE_PATH,
        groups={
            name: frozenset(workload.client_address(c) for c in clients)
            for name, clients in load.groups.items()
        },
    )
    recorder.start()
    with RssSampler(target.rss_roots) as rss:
        result = drive(target, load, options=options)
    drain_limit = drain_timeout_s or options.drain_timeout_s
    drain = wait_until_idle(target.url, contender.tokens[0], timeout_s=drain_limit)
    server = recorder.finish()
    duration = load.duration_s if load.offsets is not None else result.wall_s
    summary = summarize(
        result.outcomes,
        offered_rps=load.rate or len(result.outcomes) / max(duration, 1e-9),
        duration_s=duration,
    )
    rejected = ", ".join(f"{c}:{s.count}" for c, s in summary.rejected.items()) or "0"
    session.say(
        f"  {target.name:8} {load.label:>9} {summary.offered_rps:7.0f} rps: goodput "
        f"{summary.goodput_rps:7.1f}, 2xx p50/p99 {summary.ok_p50_ms:6.1f}/"
        f"{summary.ok_p99_ms:7.1f} ms, rejected {rejected}, timeouts {summary.timeouts}, "
        f"not sent {summary.not_sent}, errors "
        f"{summary.server_errors + sum(summary.client_errors.values())}, "
        f"lag p99 {summary.lag_p99_ms:.1f} ms"
        + ("" if drain is not None else ", server still busy after the run")
    )
    restarted = drain is None and target.restart is not None
    if restarted:
        assert target.restart is not None
        session.say(f"  {target.name} not answering {drain_limit:g} s later: restarting it")
        target.restart()  # also ends its transactions: no commit lands after the check
        session.pin(target)  # a child of this process: born on the generator's core
    integrity = database.check_integrity(result.outcomes, settled_titles(dsn, load.run_id))
    database.delete_bench_rows(dsn)
    if restarted:
        warm_up(session, contender)
    groups = {
        name: Group(
            clients=len(load.groups[name]),
            summary=summarize(
                outcomes,
                offered_rps=len(outcomes) / max(duration, 1e-9),
                duration_s=duration,
            ),
            server=server.groups.get(name) if server else None,
        )
        for name, outcomes in split_by_client(
            result.outcomes, {name: set(c) for name, c in load.groups.items()}
        ).items()
    }
    return Run(
        deployment=target.name,
        label=load.label,
        rate=summary.offered_rps,
        summary=summary,
        integrity=integrity,
        rss_peak_mb=dict(rss.peak_mb),
        cpu_ms_per_request={
            name: seconds * 1000 / max(1, summary.sent)
            for name, seconds in {**rss.cpu_s, "generator": result.cpu_s}.items()
        },
        generator_cpu=result.cpu_s / result.wall_s if result.wall_s else 0.0,
        drain_s=drain,
        passed=meets_target(summary, p99_ms=options.target_p99_ms, min_ok_share=CAPACITY_MIN_OK),
        restarted=restarted,
        server=server,
        groups=groups,
    )


def warm_up(session: Session, contender: Contender) -> None:
    """A few seconds of light load, not recorded: connections, caches, lazy imports."""
    options, target = session.options, contender.target
    session.pin(target)
    load = open_load(
        session, contender, label="warmup", rate=WARM_UP_RATE, duration_s=options.warm_up_s
    )
    drive(target, load, options=options)
    wait_until_idle(target.url, contender.tokens[0], timeout_s=options.drain_timeout_s)
    settled_titles(contender.dsn, load.run_id)
    database.delete_bench_rows(contender.dsn)


def seed(url: str, dsn: str, emails: Sequence[str]) -> int:
    """The benchmark's clients and their seeded items, in a freshly started stack."""
    workload.sign_up(url, emails)
    return database.seed_items(dsn, emails=emails, count=workload.SEEDED_ITEMS)


# --------------------------------------------------------------------------
# Starting a benchmark


def start_session(options: Options, result: BenchResult) -> Session:
    """The session; with --one-core, this process (the generator) moves to its core now."""
    session = Session(options=options)
    if options.one_core:
        session.cores = affinity.plan_one_core(os.sched_getaffinity(0))
        affinity.pin_self(session.cores.generator)
        result.mode = session.cores.describe()
    return session


def calibrate_generator(session: Session, result: BenchResult) -> float:
    """The generator's ceiling (or, without calibration, the highest calibration rate)."""
    options = session.options
    if options.calibrate:
        progress("generator calibration against a trivial nginx target")
        result.ceiling, result.calibration = calibrate.calibrate(
            port=options.calibration_port,
            rates=options.calibration_rates,
            duration_s=options.calibration_duration_s,
            max_in_flight=options.max_in_flight,
            timeout_s=options.timeout_s,
            progress=progress,
            server_cpus=session.cores.servers if session.cores else None,
        )
        progress(f"generator ceiling: {result.ceiling:.0f} rps")
    return result.ceiling or max(options.calibration_rates)


@contextlib.contextmanager
def current_stack(options: Options, deployment: DeploymentResult) -> Iterator[RunningStack]:
    """This checkout's stack, on --port-base and --state, its limits noted; stopped on exit."""
    progress(f"starting the Sluice stack (port base {options.port_base}, state {options.state})")
    with sluice_stack(
        port_base=options.port_base,
        state=options.state,
        postgres_max_connections=POSTGRES_MAX_CONNECTIONS,
        overrides=options.sluice_overrides,
    ) as stack:
        deployment.settings = {k: stack.env[k] for k in SLUICE_LIMITS if k in stack.env}
        yield stack


@contextlib.contextmanager
def stops_early(result: BenchResult) -> Iterator[None]:
    """What ends a benchmark before its time is recorded, so the report still gets written."""
    try:
        yield
    except (TargetError, workload.WorkloadError, ValueError, LookupError) as exc:
        result.error = str(exc)
        progress(f"stopped: {exc}")


def new_result(options: Options, deployments: list[DeploymentResult]) -> BenchResult:
    return BenchResult(
        options=options,
        started=datetime.now(UTC),
        machine=report.machine_info(),
        calibration=[],
        ceiling=0.0,
        deployments=deployments,
        provenance=publish.provenance(options.command),
    )
