"""`python -m bench.profile`: where an admitted request's time goes at one offered rate.

Starts the Sluice stack on its own port base, seeds it, drives the benchmark
workload at `--rate` for `--duration`, and splits the admitted requests'
latency with the app's own histograms (scraped before and after the run):
the time in front of the app (nginx, the kernel's accept queue, the event
loop: from `X-Request-Start`), the admission queue, the pool checkout, and the
handler. CPU per process group comes from the benchmark's sampler. With
`py-spy` on PATH it also samples the busiest worker and prints its hottest
frames. Used to explain a missed target (docs/benchmark.md).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import psutil

from bench import workload
from bench.procedure import measure, parse_options, seed, warm_up
from bench.serverside import metric_families
from bench.targets import ROOT, sluice_stack

HISTOGRAMS = {
    "sluice_request_queue_seconds": "in front of the app (nginx, accept queue, event loop)",
    "sluice_admission_wait_seconds": "admission queue",
    "sluice_db_pool_checkout_wait_seconds": "pool checkout",
    "sluice_http_request_duration_seconds": "in the app, admission wait included",
}


def scrape(url: str) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts (le -> count, inf included) and sum/count, per histogram."""
    found: dict[str, dict[float, float]] = collections.defaultdict(lambda: collections.Counter())
    for family in metric_families(url):
        if family.name not in HISTOGRAMS:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                found[family.name][float(sample.labels["le"])] += sample.value
            elif sample.name.endswith("_sum"):
                found[family.name][-1.0] += sample.value  # -1: the sum
            elif sample.name.endswith("_count"):
                found[family.name][-2.0] += sample.value  # -2: the count
    return found


def quantile(buckets: dict[float, float], q: float) -> float:
    """histogram_quantile over cumulative buckets (linear within a bucket)."""
    bounds = sorted(b for b in buckets if b >= 0)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return float("nan")
    rank, previous_bound, previous_count = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            share = (rank - previous_count) / max(count - previous_count, 1e-9)
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return previous_bound


def breakdown(
    before: dict[str, dict[float, float]],
    after: dict[str, dict[float, float]],
    histograms: Mapping[str, str] = HISTOGRAMS,
) -> str:
    lines = ["| component | requests | mean ms | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    for name, label in histograms.items():
        delta = {k: after[name][k] - before[name].get(k, 0.0) for k in after[name]}
        count = delta.get(-2.0, 0.0)
        mean = 1000 * delta.get(-1.0, 0.0) / count if count else float("nan")
        lines.append(
            f"| {label} | {count:.0f} | {mean:.1f} | {1000 * quantile(delta, 0.5):.1f} "
            f"| {1000 * quantile(delta, 0.99):.1f} |"
        )
    return "\n".join(lines)


def start_sampling(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy on one worker, in the background; None when py-spy is not installed."""
    spy = shutil.which("py-spy")
    if spy is None:
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--idle",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def hottest_frames(raw: Path, top: int = 15) -> str:
    """The leaf frames with the most samples, from py-spy's collapsed stacks."""
    leaves: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaves[stack.split(";")[-1]] += int(count)
    total = sum(leaves.values()) or 1
    rows = [f"| {leaf} | {100 * n / total:.1f} % |" for leaf, n in leaves.most_common(top)]
    return "\n".join(["| leaf frame | samples |", "|---|---:|", *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--rate", type=float, required=True, help="offered rps")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--port-base", type=int, default=26300)
    parser.add_argument("--clients", help="client accounts (default: as in bench)")
    parser.add_argument("--sluice-set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    options = parse_options(
        ["--no-calibration", "--duration", str(args.duration), "--port-base", str(args.port_base)]
        + ["--state", str(ROOT / ".sluice-profile")]
        + (["--clients", args.clients] if args.clients else [])
        + [f"--sluice-set={item}" for item in args.sluice_set]
    )
    with sluice_stack(
        port_base=options.port_base,
        state=options.state,
        postgres_max_connections=60,
        overrides=options.sluice_overrides,
    ) as stack:
        dsn = stack.database_url
        emails = workload.client_emails(options.clients)
        seed(stack, emails)
        tokens = workload.log_in(stack.url, emails)
        target = stack.deployment()
        warm_up(target, tokens=tokens, dsn=dsn, options=options)
        metrics_url = stack.metrics_url
        workers = psutil.Process(stack.pid("gunicorn")).children()
        before = scrape(metrics_url)
        raw = Path(tempfile.mkdtemp(prefix="sluice-profile-")) / "worker.txt"
        spy = start_sampling(workers[0].pid, args.duration * 0.8, raw)
        run = measure(
            target,
            tokens=tokens,
            dsn=dsn,
            rate=args.rate,
            duration_s=args.duration,
            label="profile",
            options=options,
            sequence=900,
        )
        after = scrape(metrics_url)
        if spy is not None:
            spy.wait(timeout=60)
    frames = (
        hottest_frames(raw)
        if spy is not None and raw.exists()
        else "(no worker samples: `pip install py-spy` and run as root to get them)"
    )
    shutil.rmtree(raw.parent, ignore_errors=True)
    s = run.summary
    print(
        f"\noffered {args.rate:.0f} rps for {args.duration:g} s: goodput {s.goodput_rps:.1f} rps, "
        f"2xx p50/p99 {s.ok_p50_ms:.1f}/{s.ok_p99_ms:.1f} ms (from the scheduled send), "
        f"refused {s.rejected_total}, generator lag p99 {s.lag_p99_ms:.1f} ms"
    )
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in run.cpu_ms_per_request.items())
    print(f"CPU ms per request sent: {cpu}\n")
    print(breakdown(before, after))
    print()
    print(frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
