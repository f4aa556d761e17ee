"""`python -m bench.discipline`: the admission queue's FIFO and LIFO side by side.

The same Sluice stack, restarted once per discipline, is driven by the same
open-loop workload at the same rates (multiples of one capacity, found with
the first discipline or given). The report (docs/benchmark.md quotes it) shows
what each discipline does to the requests it admits and to the ones it turns
away when the offered load is above capacity.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bench import report, workload
from bench.procedure import (
    RESULTS,
    Options,
    Run,
    find_capacity,
    measure,
    parse_options,
    progress,
    seed,
    warm_up,
)
from bench.targets import TargetError, sluice_stack

DISCIPLINES = ("fifo", "lifo")


def run_discipline(
    discipline: str, *, options: Options, capacity: float | None, round_: int
) -> tuple[float, list[Run]]:
    """One stack with this discipline: capacity (if not given), then each multiple."""
    overrides = {**options.sluice_overrides, "SLUICE_ADMISSION_DISCIPLINE": discipline}
    progress(f"{discipline}: starting the Sluice stack (port base {options.port_base})")
    with sluice_stack(
        port_base=options.port_base,
        state=options.state,
        postgres_max_connections=60,
        overrides=overrides,
    ) as stack:
        dsn = stack.database_url
        emails = workload.client_emails(options.clients)
        seed(stack, emails)
        tokens = workload.log_in(stack.url, emails)
        target = replace(stack.deployment(), name=discipline)
        warm_up(target, tokens=tokens, dsn=dsn, options=options)
        if capacity is None:
            capacity, _ = find_capacity(
                target, tokens=tokens, dsn=dsn, options=options, ceiling=2000.0, first=0
            )
            progress(f"{discipline}: capacity {capacity:.0f} rps")
            if capacity <= 0:
                raise TargetError("no rate met the latency target")
        runs = [
            measure(
                target,
                tokens=tokens,
                dsn=dsn,
                rate=m * capacity,
                duration_s=options.duration_s,
                label=f"{m:g}x",
                options=options,
                sequence=500 + 10 * round_ + index,
            )
            for index, m in enumerate(options.multiples)
        ]
    return capacity, runs


def waited_refusals(run: Run) -> float:
    """Share of the app's refusals that came only after a full queue wait T."""
    app = {name: stats.count for name, stats in run.summary.reasons.items() if " app:" in name}
    total = sum(app.values())
    waited = sum(count for name, count in app.items() if name.endswith(":queue_timeout"))
    return waited / total if total else 0.0


def _row(run: Run) -> str:
    s = run.summary
    reasons = ", ".join(
        f"{name.split(' ', 1)[1]} {stats.count} (p99 {stats.p99_ms:.0f} ms)"
        for name, stats in sorted(s.reasons.items())
    )
    lost = run.integrity.acknowledged_missing
    refused_applied = run.integrity.committed_after_rejection
    return (
        f"| {run.deployment} | {run.label} | {s.offered_rps:.0f} | {s.goodput_rps:.1f} "
        f"| {s.ok_p50_ms:.1f} | {s.ok_p99_ms:.1f} | {s.rejected_total} "
        f"| {s.rejection_p99_ms:.0f} | {100 * waited_refusals(run):.0f} % "
        f"| {reasons or '-'} | {s.timeouts} "
        f"| {lost} | {refused_applied} |"
    )


def render(capacity: float, runs: list[Run], options: Options, elapsed_s: float) -> str:
    machine = report.machine_info()
    lines = [
        "# Admission queue discipline: FIFO vs LIFO",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {elapsed_s / 60:.1f} min; "
        + ", ".join(f"{k} {v}" for k, v in machine.items()),
        "",
        f"Capacity {capacity:.0f} rps (found with {runs[0].deployment}); "
        f"{options.duration_s:g} s per level; latencies from the scheduled send time.",
        "",
        "| discipline | level | offered rps | goodput rps | 2xx p50 ms | 2xx p99 ms "
        "| rejected | rejection p99 ms | app refusals after waiting T | by reason | timeouts "
        "| acked writes lost | refused writes applied |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_row(run) for run in sorted(runs, key=lambda r: (r.rate, r.deployment))),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.discipline",
        description="FIFO vs LIFO admission queue under the benchmark workload.",
    )
    parser.add_argument("--capacity", type=float, help="rps; default: search with the first")
    parser.add_argument("--multiples", default="1,2,4")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=1, help="alternate the disciplines N times")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--clients", help="client accounts (default: as in bench)")
    parser.add_argument(
        "--sluice-set", action="append", default=[], metavar="KEY=VALUE", help="as in bench"
    )
    args = parser.parse_args(argv)
    # nginx's per-client rate limit would turn part of the excess away before
    # the admission queue saw it (all of it with one client).
    settings = ["NGINX_RATE_PER_CLIENT=100000r/s", "NGINX_BURST_PER_CLIENT=100000"]
    options = parse_options(
        ["--no-calibration", "--multiples", args.multiples, "--duration", str(args.duration)]
        + (["--clients", args.clients] if args.clients else [])
        + [f"--sluice-set={item}" for item in settings + args.sluice_set]
    )
    out = args.out or RESULTS / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-discipline"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    capacity: float | None = args.capacity
    runs: list[Run] = []
    try:
        for round_ in range(args.rounds):
            for discipline in DISCIPLINES:
                capacity, measured = run_discipline(
                    discipline, options=options, capacity=capacity, round_=round_
                )
                runs.extend(measured)
    except (TargetError, workload.WorkloadError) as exc:
        print(f"bench.discipline: {exc}", file=sys.stderr)
        return 1
    assert capacity is not None
    text = render(capacity, runs, options, time.monotonic() - t0)
    (out / "report.md").write_text(text)
    print(text)
    print(f"written to {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
