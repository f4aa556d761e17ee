"""`python -m bench --baseline REV`: the current stack beside REV's, in one run (issue 21).

Both stacks run side by side, each on its own port base, state and
PostgreSQL cluster, the same settings given to both and the same clients and
seed data in each. The plain deployment does not run: this compares Sluice
with Sluice. Three phases:

1. Statements per request. From one client at a low rate, N authenticated
   reads alone, then N creates alone, against each stack; PgBouncer's
   `SHOW STATS` total_query_count gained, divided by the requests answered
   2xx (bench.statements waits out PgBouncer's refresh period before each
   reading; the two stacks' waits overlap).
2. A ladder of fixed rates, each against the current stack, then the
   baseline's, then the next rate: goodput, latency, and the CPU of each
   stack's process trees (app, nginx + PgBouncer, PostgreSQL) per request,
   compared at CPU_RATE.
3. Peak goodput: the most each served in any rung.
"""

from __future__ import annotations

import time

from bench import database, plan, schedule, statements, workload
from bench.criteria import CPU_RATE
from bench.results import BenchResult, DeploymentResult, Options
from bench.revision import Revision, checkout, install, revision_stack
from bench.runner import (
    POSTGRES_MAX_CONNECTIONS,
    SLUICE_LIMITS,
    Contender,
    Load,
    Session,
    calibrate_generator,
    current_stack,
    drive,
    measure,
    new_result,
    open_load,
    progress,
    seed,
    start_session,
    stops_early,
    warm_up,
)
from bench.statements import StatementCount
from bench.targets import TargetError, sluice_deployment

# One client, well below any capacity: the statement counts must not include refusals.
STATEMENT_RATE = 20.0
STATEMENT_KINDS = {"read": 0.0, "create": 1.0}  # kind -> share of creates


def statement_load(session: Session, contender: Contender, *, kind: str) -> Load:
    """N requests of one kind from client 0, at STATEMENT_RATE."""
    count = session.options.statement_requests
    run_id = session.run_id(contender.name, f"statements-{kind}")
    requests = workload.build_requests(
        count,
        run_id=run_id,
        seed=session.options.seed,
        tokens=contender.tokens[:1],
        post_fraction=STATEMENT_KINDS[kind],
    )
    offsets = schedule.uniform_offsets(STATEMENT_RATE, count / STATEMENT_RATE)
    return Load(
        f"statements {kind}", STATEMENT_RATE, count / STATEMENT_RATE, run_id, requests, offsets
    )


def count_statements(
    session: Session, contenders: list[Contender], envs: dict[str, dict[str, str]]
) -> None:
    """Phase 1: each kind alone against each stack; PgBouncer's counters before and after."""
    dsns = {c.name: statements.stats_dsn(envs[c.name]) for c in contenders}
    dbs = {c.name: envs[c.name]["SLUICE_DB_NAME"] for c in contenders}
    period = max(statements.stats_period_s(dsn) for dsn in dsns.values())
    progress(
        f"statements per request: {session.options.statement_requests} of each kind, "
        f"PgBouncer's SHOW STATS (refreshed every {period:g} s)"
    )
    idle_since = time.monotonic()
    before = {
        c.name: statements.settled_totals(
            dsns[c.name], database=dbs[c.name], since=idle_since, period_s=period
        )
        for c in contenders
    }
    for kind in STATEMENT_KINDS:
        ended: dict[str, tuple[float, int, int]] = {}
        for contender in contenders:
            session.pin(contender.target)
            load = statement_load(session, contender, kind=kind)
            outcomes = drive(contender.target, load, options=session.options).outcomes
            ok = sum(o.ok for o in outcomes)
            ended[contender.name] = (time.monotonic(), len(outcomes), ok)
        for contender in contenders:
            name = contender.name
            at, sent, ok = ended[name]
            after = statements.settled_totals(
                dsns[name], database=dbs[name], since=at, period_s=period
            )
            count = statements.count(kind, before=before[name], after=after, requests=sent, ok=ok)
            contender.result.statements[kind] = count
            before[name] = after
            progress(f"  {name:8} {kind:6}: {_describe(count)}")
        for contender in contenders:
            database.delete_bench_rows(contender.dsn)


def _describe(count: StatementCount) -> str:
    return (
        f"{count.queries} statements, {count.transactions} transactions over {count.ok} 2xx "
        f"of {count.requests}: {count.per_request:.2f} per request"
    )


def run_ladder(session: Session, contenders: list[Contender], rates: list[float]) -> None:
    """Phase 2: each rate against each stack in turn (current, baseline, current, ...)."""
    by_name = {c.name: c for c in contenders}
    for name, label, rate in plan.interleave(list(by_name), plan.fixed_levels(rates)):
        contender = by_name[name]
        load = open_load(
            session, contender, label=label, rate=rate, duration_s=session.options.duration_s
        )
        contender.result.levels.append(measure(session, contender, load))


def _settings(options: Options) -> dict[str, str]:
    """What both stacks are started with: the benchmark's environment and --sluice-set."""
    return {
        "SLUICE_ENVIRONMENT": "test",
        "POSTGRES_MAX_CONNECTIONS": str(POSTGRES_MAX_CONNECTIONS),
        **options.sluice_overrides,
    }


def run_comparison(options: Options) -> BenchResult:
    t0 = time.monotonic()
    current = DeploymentResult("sluice", "the current code's stack (this checkout)")
    baseline = DeploymentResult("baseline", f"revision {options.baseline}'s stack")
    result = new_result(options, [current, baseline])
    session = start_session(options, result)
    try:
        revision = checkout(options.baseline, progress=progress)
        baseline.description = (
            f"commit {revision.short}'s stack, from its worktree {revision.path} with its own "
            "virtualenv and launcher"
        )
        install(revision, progress=progress)
    except (TargetError, OSError) as exc:
        result.error = f"baseline {options.baseline}: {exc}"
        return result
    calibrate_generator(session, result)
    emails = workload.client_emails(options.clients)
    with stops_early(result), current_stack(options, current) as stack:
        _with_baseline(session, result, revision, stack.env, emails)
    result.elapsed_s = time.monotonic() - t0
    return result


def _with_baseline(
    session: Session,
    result: BenchResult,
    revision: Revision,
    env: dict[str, str],
    emails: list[str],
) -> None:
    options = session.options
    current, baseline = result.deployments
    state = options.state.with_name(f"{options.state.name}-baseline-{revision.short}")
    progress(
        f"starting {revision.short}'s stack (port base {options.baseline_port_base}, state {state})"
    )
    with revision_stack(
        revision,
        port_base=options.baseline_port_base,
        state=state,
        settings=_settings(options),
    ) as their_env:
        baseline.settings = {k: their_env[k] for k in SLUICE_LIMITS if k in their_env}
        contenders = []
        for deployment, published in ((current, env), (baseline, their_env)):
            url, dsn = published["SLUICE_URL"], published["SLUICE_DATABASE_URL"]
            items = seed(url, dsn, emails)
            progress(f"{deployment.name}: {len(emails)} clients signed up, {items} items seeded")
            contenders.append(
                Contender(
                    deployment,
                    sluice_deployment(published, name=deployment.name),
                    workload.log_in(url, emails),
                    dsn,
                )
            )
        for contender in contenders:
            warm_up(session, contender)
        count_statements(session, contenders, {current.name: env, baseline.name: their_env})
        rates = plan.ladder(options.rates)
        progress(
            f"rate ladder {', '.join(f'{r:g}' for r in rates)} rps, current then baseline; "
            f"CPU per request compared at {CPU_RATE:g} rps"
        )
        run_ladder(session, contenders, rates)
        session.record_cpus(contenders, result)
