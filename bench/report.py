"""The markdown report, the plots and a JSON copy of the figures."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from bench import calibrate
from bench.results import BenchResult, DeploymentResult, Run
from bench.serverside import REFUSERS, Layers
from bench.stats import StatusStats, Summary

ROOT = Path(__file__).resolve().parent.parent
# Above this generator lag p99 a run's client-side tail is partly the generator's.
LAG_UNRELIABLE_MS = 20.0


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    load = os.getloadavg()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "commit": commit or "unknown",
        "load average at start": " ".join(f"{x:.2f}" for x in load),
    }


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _server_rss(run: Run) -> float:
    return run.rss_peak_mb.get("app", 0.0) + run.rss_peak_mb.get("proxies", 0.0)


def _cpu(run: Run) -> str:
    cpu = run.cpu_ms_per_request
    server = cpu.get("app", 0.0) + cpu.get("proxies", 0.0)
    return f"{server:.2f} / {cpu.get('postgres', 0.0):.2f} / {cpu.get('generator', 0.0):.2f}"


def _rejections(summary: Summary) -> str:
    if not summary.rejected:
        return "0"
    return ", ".join(
        f"{code}: {s.count} (p99 {_ms(s.p99_ms)} ms)" for code, s in summary.rejected.items()
    )


def _other_errors(summary: Summary) -> str:
    parts = [f"{code}: {s.count}" for code, s in summary.http_errors.items()]
    parts += [f"{name}: {n}" for name, n in sorted(summary.client_errors.items())]
    return ", ".join(parts) or "0"


def _throughput_table(runs: list[Run]) -> list[str]:
    lines = [
        "| load | offered rps | goodput rps | 2xx | 2xx p50 ms | 2xx p99 ms "
        "| rejected (status: n, p99) | timeouts | other errors | not sent |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for run in runs:
        s = run.summary
        lines.append(
            f"| {run.label} | {s.offered_rps:.0f} | {s.goodput_rps:.1f} | {s.ok}/{s.scheduled} "
            f"| {_ms(s.ok_p50_ms)} | {_ms(s.ok_p99_ms)} | {_rejections(s)} | {s.timeouts} "
            f"| {_other_errors(s)} | {s.not_sent} |"
        )
    return lines


def _resources_table(runs: list[Run]) -> list[str]:
    lines = [
        "| load | server RSS peak MB | PostgreSQL RSS peak MB | acked POSTs "
        "| acked missing | committed, not acked (timeout / rejected / other) "
        "| duplicates | drain s | CPU ms/request: server / PostgreSQL / generator "
        "| generator CPU |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for run in runs:
        i = run.integrity
        drain = "> limit" if run.drain_s is None else f"{run.drain_s:.1f}"
        if run.restarted:
            drain += ", restarted"
        lines.append(
            f"| {run.label} | {_server_rss(run):.0f} | {run.rss_peak_mb.get('postgres', 0):.0f} "
            f"| {i.acknowledged} | {i.acknowledged_missing} "
            f"| {i.committed_after_timeout} / {i.committed_after_rejection} / "
            f"{i.committed_after_other} | {i.duplicates + i.unknown} | {drain} "
            f"| {_cpu(run)} | {run.generator_cpu:.2f} |"
        )
    return lines


def _reasons_table(runs: list[Run]) -> list[str]:
    lines = ["| load | status and reason: count (p99 ms) |", "|---|---|"]
    for run in runs:
        reasons = run.summary.reasons
        text = "; ".join(f"{key}: {st.count} ({_ms(st.p99_ms)})" for key, st in reasons.items())
        lines.append(f"| {run.label} | {text or 'none'} |")
    return lines


def _p50_p99(stats: StatusStats | None) -> str:
    if stats is None or not stats.count:
        return "-"
    return f"{_ms(stats.p50_ms)} / {_ms(stats.p99_ms)}"


def _run_name(run: Run) -> str:
    return f"{run.label} {run.rate:.0f} rps" if run.label == "search" else run.label


def _table(header: str, align: str, rows: list[list[str]]) -> list[str]:
    """A markdown table: `header` "a | b | ...", `align` one "l" or "r" a column."""
    rule = "|".join("---:" if a == "r" else "---" for a in align)
    return [f"| {header} |", f"|{rule}|", *(f"| {' | '.join(r)} |" for r in rows)]


def _nginx_log(run: Run) -> Layers | None:
    return run.server.layers if run.server else None


def _refusers_table(runs: list[Run]) -> list[str]:
    """Who refused, per layer, as nginx's access log and the app's counters tell it."""
    rows = []
    for run in runs:
        layers = _nginx_log(run)
        shed = run.server.shed if run.server else None
        row = [_run_name(run), f"{run.rate:.0f}"]
        if layers is None:
            row += ["-"] * 4
        else:
            refused = layers.refused
            row += [
                str(layers.logged),
                *(str(refused[w].count if w in refused else 0) for w in REFUSERS),
            ]
        row.append("-" if shed is None else ", ".join(f"{k}: {n}" for k, n in shed.items()) or "0")
        other = layers.other.items() if layers else ()
        row.append("-" if layers is None else ", ".join(f"{c}: {n}" for c, n in other) or "0")
        rows.append(row)
    header = (
        f"run | offered rps | requests in nginx's log | {' | '.join(REFUSERS)} "
        "| app 503 by layer:reason (sluice_shed_total) | other statuses in nginx's log"
    )
    return _table(header, "lrrrrrll", rows)


def _latency_table(runs: list[Run]) -> list[str]:
    """Refusal and admitted latency, server side (nginx's request_time) beside client side."""
    rows = []
    for run in runs:
        s = run.summary
        layers = _nginx_log(run)
        server = layers.refused_by_layer if layers else {}
        lag = f"{_ms(s.lag_p50_ms)} / {_ms(s.lag_p99_ms)}"
        if s.lag_p99_ms > LAG_UNRELIABLE_MS:
            lag += " **client tail unreliable**"
        row = [_run_name(run), f"{run.rate:.0f}"]
        for layer in ("nginx", "app"):
            client = s.refused_by_layer.get(layer)
            row += [
                str(client.count if client else 0),
                _p50_p99(server.get(layer)),
                _p50_p99(client),
            ]
        row += [
            _p50_p99(layers.refused_all) if layers else "-",
            _ms(layers.admitted.p99_ms) if layers else "-",
            _ms(s.ok_p99_ms),
            lag,
        ]
        rows.append(row)
    header = (
        "run | offered rps | nginx refused (client) | nginx refusal p50 / p99 ms: server "
        "| client | app refused (client) | app refusal p50 / p99 ms: server | client "
        "| every refusal p50 / p99 ms: server | 2xx p99 ms: server | client "
        "| generator lag p50 / p99 ms"
    )
    return _table(header, "lrrllrlllrrl", rows)


def _lag_warning(runs: list[Run]) -> list[str]:
    late = [
        f"{_run_name(r)} ({_ms(r.summary.lag_p99_ms)} ms)"
        for r in runs
        if r.summary.lag_p99_ms > LAG_UNRELIABLE_MS
    ]
    if not late:
        return []
    return [
        f"**The client-side tail is unreliable for: {', '.join(late)}.** The generator sent "
        f"those runs' requests more than {LAG_UNRELIABLE_MS:g} ms late at p99, so their "
        "client-side p99 (2xx and refusals) measures the generator as much as the server; "
        "the server-side columns (nginx's request_time) do not include that lag.",
        "",
    ]


def _layers_section(deployment: DeploymentResult) -> list[str]:
    runs = [*deployment.search, *deployment.levels]
    if not runs:
        return []
    lines = []
    if any(r.server for r in runs):
        lines += [
            "Who refused, per layer (server side: nginx's access log and the app's "
            "sluice_shed_total; every run, search steps first):",
            "",
            *_refusers_table(runs),
            "",
        ]
    else:
        lines += [
            "Who refused: this deployment has no nginx and no metrics endpoint, so only the "
            "client's view exists (the status and reason table above; `app` = the app's 503s).",
            "",
        ]
    lines += [
        "Latency of refusals and of admitted requests, server side (nginx's request_time, "
        "ms resolution) beside client side (from the scheduled send), and the generator's lag:",
        "",
        *_latency_table(runs),
        "",
        *_lag_warning(runs),
    ]
    return lines


def _settings_lines(deployment: DeploymentResult) -> list[str]:
    if not deployment.settings:
        return []
    lines = ["Limits in force: " + ", ".join(f"{k}={v}" for k, v in deployment.settings.items())]
    workers = deployment.settings.get("SLUICE_WORKERS")
    in_flight = deployment.settings.get("SLUICE_MAX_IN_FLIGHT")
    if workers and in_flight and deployment.capacity > 0:
        implied = int(workers) * int(in_flight) / deployment.capacity * 1000
        assumed = deployment.settings.get("SLUICE_SERVICE_TIME_MS", "50 (default)")
        lines.append(
            f"Service time implied at capacity (workers x in-flight limit / capacity): "
            f"{implied:.0f} ms; the sizing assumed SLUICE_SERVICE_TIME_MS={assumed}."
        )
    return [*lines, ""]


def _search_table(deployment: DeploymentResult) -> list[str]:
    lines = [
        "| rate rps | 2xx p99 ms | errors | result |",
        "|---:|---:|---:|---|",
    ]
    for run in deployment.search:
        s = run.summary
        lines.append(
            f"| {run.rate:.0f} | {_ms(s.ok_p99_ms)} | {s.error_rate:.1%} "
            f"| {'pass' if run.passed else 'fail'} |"
        )
    return lines


def _level(deployment: DeploymentResult, label: str) -> Run | None:
    return next((r for r in deployment.levels if r.label == label), None)


def evaluate_targets(result: BenchResult) -> list[tuple[str, str, bool | None]]:
    """The benchmark's targets: (target, measured, met); met is None when not judged."""
    sluice, plain = result.deployments
    low, one, high = (_level(sluice, m) for m in ("0.5x", "1x", "4x"))
    plain_low = _level(plain, "0.5x")
    checks: list[tuple[str, str, bool | None]] = []

    def add(name: str, measured: str | None, met: bool | None) -> None:
        checks.append((name, measured or "not measured", met if measured else None))

    if high is not None:
        s = high.summary
        add(
            "4x: goodput >= 90% of capacity",
            f"{s.goodput_rps:.1f} rps = {s.goodput_rps / sluice.capacity:.0%} of "
            f"{sluice.capacity:.0f}",
            s.goodput_rps >= 0.9 * sluice.capacity,
        )
        add("4x: zero timeouts", str(s.timeouts), s.timeouts == 0)
        layers = _nginx_log(high)
        if layers is None:
            add("4x: refusal p99 <= 20 ms, server side", None, None)
        else:
            every = layers.refused_all
            add(
                "4x: refusal p99 <= 20 ms, server side",
                f"{_ms(every.p99_ms)} ms over {every.count} refusals (nginx's request_time)"
                if every.count
                else "no refusals",
                not every.count or every.p99_ms <= 20,
            )
        lag_ok = s.lag_p99_ms <= LAG_UNRELIABLE_MS
        measured = f"{_ms(s.rejection_p99_ms)} ms" if s.rejected else "no refusals"
        measured += f", generator lag p99 {_ms(s.lag_p99_ms)} ms"
        add(
            f"4x: refusal p99 <= 50 ms, client side (judged when lag p99 <= "
            f"{LAG_UNRELIABLE_MS:g} ms)",
            measured if lag_ok else measured + ": not judged",
            (not s.rejected or s.rejection_p99_ms <= 50) if lag_ok else None,
        )
        if low is not None:
            # Judged on the client side when the generator kept up at both
            # levels; otherwise on nginx's request_time, which its lag cannot reach.
            low_log = _nginx_log(low)
            measured = f"{_ms(s.ok_p99_ms)} ms vs 3 x {_ms(low.summary.ok_p99_ms)} ms"
            server = None
            if layers is not None and low_log is not None:
                server = (layers.admitted.p99_ms, low_log.admitted.p99_ms)
                measured += f" (server side {_ms(server[0])} vs 3 x {_ms(server[1])} ms)"
            if lag_ok and low.summary.lag_p99_ms <= LAG_UNRELIABLE_MS:
                met: bool | None = s.ok_p99_ms <= 3 * low.summary.ok_p99_ms
            elif server is not None:
                measured += ": generator lag over the limit, judged on the server side"
                met = server[0] <= 3 * server[1]
            else:
                measured += ": not judged"
                met = None
            add("4x: admitted p99 <= 3 x p99 at 0.5x", measured, met)
        count_500 = sum(st.count for code, st in s.http_errors.items() if code == 500)
        add("4x: zero 500s", str(count_500), count_500 == 0)
        if one is not None:
            add(
                "4x: peak RSS within 20% of 1x",
                f"{_server_rss(high):.0f} MB vs {_server_rss(one):.0f} MB",
                _server_rss(high) <= 1.2 * _server_rss(one),
            )
    else:
        add("4x targets", None, None)
    lost = sum(r.integrity.acknowledged_missing for r in sluice.levels + sluice.search)
    add(
        "zero lost acknowledged writes (every Sluice run)",
        str(lost) if sluice.levels else None,
        lost == 0,
    )
    if low is not None and plain_low is not None:
        diff = low.summary.ok_p50_ms - plain_low.summary.ok_p50_ms
        add(
            "0.5x: p50 within 3 ms of plain",
            f"{_ms(low.summary.ok_p50_ms)} vs {_ms(plain_low.summary.ok_p50_ms)} ms ({diff:+.1f})",
            diff <= 3,
        )
    else:
        add("0.5x: p50 within 3 ms of plain", None, None)
    if plain.capacity > 0 and sluice.capacity > 0:
        add(
            "capacity >= 85% of plain",
            f"{sluice.capacity:.0f} vs {plain.capacity:.0f} rps "
            f"({sluice.capacity / plain.capacity:.0%})",
            sluice.capacity >= 0.85 * plain.capacity,
        )
    else:
        add("capacity >= 85% of plain", None, None)
    return checks


def _plots(result: BenchResult, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    styles = {"sluice": ("tab:blue", "o"), "plain": ("tab:red", "s")}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = 0.0
    for d in result.deployments:
        if not d.levels:
            continue
        x = [r.summary.offered_rps for r in d.levels]
        y = [r.summary.goodput_rps for r in d.levels]
        top = max(top, *x)
        color, marker = styles.get(d.name, ("black", "x"))
        ax.plot(x, y, marker=marker, color=color, label=f"{d.name} (capacity {d.capacity:.0f})")
    if top:
        ax.plot([0, top], [0, top], ls=":", color="grey", label="goodput = offered")
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("goodput (2xx within 1 s, per s)")
    ax.set_title("Goodput against offered load")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "goodput.png", dpi=110)
    plt.close(fig)
    names.append("goodput.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for d in result.deployments:
        if not d.levels:
            continue
        color, marker = styles.get(d.name, ("black", "x"))
        x = [r.summary.offered_rps for r in d.levels]
        ax.plot(
            x,
            [r.summary.ok_p99_ms for r in d.levels],
            marker=marker,
            color=color,
            label=f"{d.name}: 2xx p99",
        )
        rejection = [r.summary.rejection_p99_ms for r in d.levels]
        if any(not math.isnan(v) for v in rejection):
            ax.plot(
                x,
                rejection,
                marker=marker,
                color=color,
                ls="--",
                alpha=0.6,
                label=f"{d.name}: rejection p99",
            )
    ax.axhline(result.options.target_p99_ms, ls=":", color="grey", label="latency target")
    ax.axhline(
        result.options.timeout_s * 1000, ls="-.", color="grey", alpha=0.5, label="client timeout"
    )
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("p99 latency from scheduled send (ms)")
    ax.set_title("p99 latency against offered load")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "p99.png", dpi=110)
    plt.close(fig)
    names.append("p99.png")
    return names


def render(result: BenchResult, plots: list[str]) -> str:
    o = result.options
    lines = [
        f"# Sluice overload benchmark, {result.started:%Y-%m-%d %H:%M} UTC"
        + (" (--quick: smoke run, not figures to quote)" if o.quick else ""),
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in result.machine.items()],
        "- the generator, both deployments and PostgreSQL share these cores",
        "",
        "## Method",
        "",
        f"- open loop, fixed arrival rate; latency from the scheduled send time; "
        f"client timeout {o.timeout_s:g} s; at most {o.max_in_flight} requests in flight "
        "(one connection each), beyond that a request counts as not sent",
        "- workload: "
        + (
            f"{o.clients} clients (an account and a bearer token each; every request is "
            "sent by one of them, drawn at random, so nginx's per-client rate limit meets "
            f"about 1/{o.clients} of the rate per client)"
            if o.clients > 1
            else "1 client (one bearer token: nginx's per-client rate limit meets the whole rate)"
        )
        + ", 80% GET page of 20 at a random offset over the client's 10,000 seeded items, "
        "20% POST with a unique title; rows created are deleted after each run",
        (
            f"- fixed levels of {o.duration_s:g} s at "
            f"{', '.join(f'{r:g}' for r in o.rates)} rps for both deployments (--rates: "
            "no capacity search)"
            if o.rates
            else f"- capacity: highest rate with 2xx p99 <= {o.target_p99_ms:g} ms and < 1% "
            f"errors (non-2xx of any kind; a failed step is run again before it counts); "
            f"search steps of {o.search_duration_s:g} s, levels of {o.duration_s:g} s at "
            f"{', '.join(f'{m:g}x' for m in o.multiples)} Sluice's capacity, the same rates "
            "for both deployments"
        ),
        "- goodput: 2xx answered within 1 s of the scheduled send, per second of schedule",
        "",
        "## Generator ceiling",
        "",
    ]
    if result.calibration:
        lines += [
            f"Against nginx returning a constant 200 (criterion: all 2xx, lag p99 <= "
            f"{calibrate.LAG_LIMIT_MS:g} ms, p99 <= {calibrate.LATENCY_LIMIT_MS:g} ms): "
            f"**{result.ceiling:.0f} rps**.",
            "",
            "| rate rps | 2xx p50 ms | 2xx p99 ms | lag p99 ms | 2xx | generator CPU | result |",
            "|---:|---:|---:|---:|---:|---:|---|",
        ]
        for step in result.calibration:
            s = step.summary
            lines.append(
                f"| {step.rate:.0f} | {_ms(s.ok_p50_ms)} | {_ms(s.ok_p99_ms)} "
                f"| {_ms(s.lag_p99_ms)} | {s.ok}/{s.scheduled} | {step.cpu_share:.2f} "
                f"| {'ok' if step.passed else 'fail'} |"
            )
        over = [
            f"{r.deployment} {r.label}"
            for d in result.deployments
            for r in d.levels
            if r.rate > result.ceiling
        ]
        if over:
            lines += ["", f"Above the generator's ceiling (read with care): {', '.join(over)}."]
    else:
        lines.append("Not measured (--no-calibration).")
    lines.append("")

    for d in result.deployments:
        lines += [f"## {d.name}: {d.description}", ""]
        if d.error:
            lines += [f"**Incomplete:** {d.error}", ""]
        capacity = "not searched (--rates)" if o.rates else f"**{d.capacity:.0f} rps**"
        lines += [f"Capacity: {capacity}.", "", *_settings_lines(d)]
        lines += [*_search_table(d), ""]
        if d.levels:
            lines += [
                *_throughput_table(d.levels),
                "",
                *_resources_table(d.levels),
                "",
                *_reasons_table(d.levels),
                "",
            ]
        lines += _layers_section(d)

    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, measured, met in evaluate_targets(result):
        verdict = "-" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {measured} | {verdict} |")
    lines += [""]
    if plots:
        lines += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    lines += [
        f"Total time {result.elapsed_s / 60:.1f} min. How to read this: docs/benchmark.md.",
        "",
    ]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Summary):
            data.update(
                error_rate=value.error_rate,
                rejection_p99_ms=_jsonable(value.rejection_p99_ms),
                server_errors=value.server_errors,
            )
        return data
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def render_summary(result: BenchResult) -> str:
    """The few figures the README quotes, with the machine they came from."""
    m = result.machine
    lines = [
        f"Measured {result.started:%Y-%m-%d} on {m.get('cpu', '?')}, {m.get('memory', '?')} "
        f"(generator on the same cores; {result.options.clients} client(s); "
        f"commit {m.get('commit', '?')}):",
        "",
        "| load | offered rps | Sluice goodput | Sluice 2xx p99 ms: client (server) "
        "| Sluice refused | refusal p99 ms: server / client | generator lag p99 ms "
        "| plain goodput | plain 2xx p99 ms | plain timeouts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sluice, plain = result.deployments
    for run in sluice.levels:
        other = _level(plain, run.label)
        s = run.summary
        p = other.summary if other else None
        layers = _nginx_log(run)
        admitted_server = f" ({_ms(layers.admitted.p99_ms)})" if layers else ""
        refusal_server = _ms(layers.refused_all.p99_ms) if layers else "-"
        lines.append(
            f"| {run.label} | {s.offered_rps:.0f} | {s.goodput_rps:.0f} "
            f"| {_ms(s.ok_p99_ms)}{admitted_server} | {s.rejected_total / s.scheduled:.0%} "
            f"| {refusal_server} / {_ms(s.rejection_p99_ms)} | {_ms(s.lag_p99_ms)} "
            + (
                f"| {p.goodput_rps:.0f} | {_ms(p.ok_p99_ms)} | {p.timeouts / p.scheduled:.0%} |"
                if p
                else "| - | - | - |"
            )
        )
    capacity = (
        "Capacity: not searched (--rates)."
        if result.options.rates
        else f"Capacity (2xx p99 <= {result.options.target_p99_ms:g} ms, < 1% errors): "
        f"Sluice {sluice.capacity:.0f} rps, plain {plain.capacity:.0f} rps."
    )
    lines += ["", capacity, ""]
    return "\n".join(lines)


def write(result: BenchResult, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(result, out) if any(d.levels for d in result.deployments) else []
    text = render(result, plots)
    (out / "report.md").write_text(text)
    (out / "summary.md").write_text(render_summary(result))
    (out / "results.json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    return text
