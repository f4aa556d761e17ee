"""The markdown report, its summary for the README, and a JSON copy of the figures.

The targets are judged in bench.criteria and the plots drawn in bench.plots;
this module lays out what they say beside the measured tables.
"""

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

from bench import calibrate, criteria, plan, plots
from bench.criteria import (
    CAPACITY_MIN_OK,
    CPU_RATE,
    HEAVY_MULTIPLE,
    LAG_LIMIT_MS,
    LATENCY_TARGET_MS,
    LIGHT_CLIENTS,
    LIGHT_MULTIPLE,
    MAX_STATEMENTS,
    Check,
    at_rate,
    cpu_per_request,
    lagged,
    tally,
    verdict,
)
from bench.results import BenchResult, DeploymentResult, Run
from bench.serverside import REFUSERS, Layers
from bench.stats import StatusStats, Summary

ROOT = Path(__file__).resolve().parent.parent


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
        if s.lag_p99_ms > LAG_LIMIT_MS:
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
        if r.summary.lag_p99_ms > LAG_LIMIT_MS
    ]
    if not late:
        return []
    return [
        f"**The client-side tail is unreliable for: {', '.join(late)}.** The generator sent "
        f"those runs' requests more than {LAG_LIMIT_MS:g} ms late at p99, so their "
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


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _group_rows(run: Run) -> list[list[str]]:
    rows = []
    for name, group in run.groups.items():
        s, layers = group.summary, group.server
        served = _share(s.ok_within_target, s.scheduled)
        if layers is not None:
            served += f" / {_share(layers.admitted_within_target, s.scheduled)}"
        rows.append(
            [
                name,
                str(group.clients),
                f"{s.offered_rps:.0f}",
                f"{s.goodput_rps:.1f}",
                f"{s.ok}/{s.scheduled}",
                f"{s.rejected_total} ({_share(s.rejected_total, s.scheduled)})",
                f"{_ms(s.ok_p99_ms)} / {_ms(layers.admitted.p99_ms) if layers else '-'}",
                served,
                str(s.timeouts),
            ]
        )
    return rows


def _fairness_section(result: BenchResult) -> list[str]:
    runs = [d.fairness for d in result.deployments if d.fairness is not None]
    if not runs:
        why = "--rates: no capacity to size it from" if result.options.rates else "--no-fairness"
        return ["## Fairness", "", f"Not run ({why}).", ""]
    heavy, light = plan.fairness_rates(result.deployments[1].capacity)
    lines = [
        "## Fairness: one heavy client beside light ones",
        "",
        f"One client (one token, one address) offers {HEAVY_MULTIPLE:g}x plain's capacity "
        f"({heavy:.0f} rps) beside {LIGHT_CLIENTS} light clients offering {LIGHT_MULTIPLE:g}x "
        f"together ({light:.0f} rps), for {result.options.duration_s:g} s, the usual mix. "
        f"*Served in time*: 2xx within {LATENCY_TARGET_MS:g} ms, of the group's scheduled "
        "requests, client side / server side (nginx's request_time; a request nginx never "
        "logged counts as not served). Sluice is judged, plain is for reference.",
        "",
    ]
    for run in runs:
        s = run.summary
        late = " **generator lagged: client side flagged**" if lagged(run) else ""
        lines += [
            f"{run.deployment} (generator lag p99 {_ms(s.lag_p99_ms)} ms{late}; "
            f"{'restarted after the run' if run.restarted else 'drained'}):",
            "",
            *_table(
                "clients | n | offered rps | goodput rps | 2xx | refused | 2xx p99 ms: "
                "client / server | served in time: client / server | timeouts",
                "lrrrrrlll",
                _group_rows(run),
            ),
            "",
        ]
    return lines


def _lone_section(result: BenchResult) -> list[str]:
    run = result.deployments[0].lone_client
    if run is None:
        return []
    s = run.summary
    return [
        "## A lone client on the idle stack",
        "",
        f"One client (one token, one address) keeps workers x L requests in flight (the "
        f"stack's SLUICE_WORKERS x SLUICE_MAX_IN_FLIGHT) in a closed loop for "
        f"{result.options.lone_client_s:g} s: {run.label}. {s.scheduled} requests in "
        f"{s.duration_s:.1f} s, "
        f"{s.ok} 2xx, **{s.rejected_total} refused**"
        + (f" ({_rejections(s)})" if s.rejected_total else "")
        + ", other errors "
        f"{_other_errors(s)}, timeouts {s.timeouts}; 2xx p50 / p99 {_ms(s.ok_p50_ms)} / "
        f"{_ms(s.ok_p99_ms)} ms.",
        "",
    ]


def _checks_table(checks: list[Check]) -> list[str]:
    return _table(
        "target | check | measured | verdict",
        "llll",
        [[c.target, c.name, c.measured, verdict(c.met)] for c in checks],
    )


def _statements_section(result: BenchResult) -> list[str]:
    current, baseline = result.deployments
    kinds = [k for k in ("read", "create") if k in current.statements or k in baseline.statements]
    if not kinds:
        return ["## Statements per request", "", "Not measured.", ""]
    rows = []
    for kind in kinds:
        row = [kind, f"{MAX_STATEMENTS[kind]:g}"]
        for d in (current, baseline):
            c = d.statements.get(kind)
            row.append(
                "-"
                if c is None
                else f"{c.per_request:.2f} ({c.queries} / {c.ok} of {c.requests}; "
                f"{c.transactions_per_request:.2f} transactions)"
            )
        rows.append(row)
    return [
        "## Statements per request",
        "",
        f"PgBouncer's own count (`SHOW STATS` total_query_count as the stats user, read once "
        f"its stats_period had passed since the last request) over "
        f"{result.options.statement_requests} requests of one kind alone, from one client at "
        "a low rate: statements gained / requests answered 2xx (queries / 2xx of sent).",
        "",
        *_table(
            f"kind | at most | {current.name} | {baseline.name}",
            "lrll",
            rows,
        ),
        "",
    ]


def _before_after_section(result: BenchResult) -> list[str]:
    current, baseline = result.deployments
    rows = []
    for run in current.levels:
        other = at_rate(baseline, run.rate)
        row = [f"{run.rate:g}"]
        for r in (run, other):
            if r is None:
                row += ["-"] * 5
                continue
            s = r.summary
            layers = _nginx_log(r)
            row += [
                f"{s.goodput_rps:.1f}",
                f"{_ms(s.ok_p50_ms)} / {_ms(s.ok_p99_ms)}"
                + (f" ({_ms(layers.admitted.p99_ms)})" if layers else ""),
                _share(s.rejected_total, s.scheduled),
                str(s.timeouts),
                f"{cpu_per_request(r):.2f}",
            ]
        rows.append(row)
    names = (current.name, baseline.name)
    header = "offered rps | " + " | ".join(
        f"{n} goodput | {n} 2xx p50 / p99 ms (server p99) | {n} refused | {n} timeouts "
        f"| {n} CPU ms/request"
        for n in names
    )
    mine, theirs = at_rate(current, CPU_RATE), at_rate(baseline, CPU_RATE)
    cpu = []
    if mine is not None and theirs is not None:
        parts = []
        for group in ("app", "proxies", "postgres"):
            a = mine.cpu_ms_per_request.get(group, 0.0)
            b = theirs.cpu_ms_per_request.get(group, 0.0)
            parts.append(f"{group} {a:.2f} vs {b:.2f}")
        cpu = [
            f"CPU ms per request at {CPU_RATE:g} rps, {current.name} vs {baseline.name}: "
            + ", ".join(parts)
            + f"; the whole stack {cpu_per_request(mine):.2f} vs {cpu_per_request(theirs):.2f}.",
            "",
        ]
    return [
        "## Before and after",
        "",
        f"Each rate ran against {current.name}, then {baseline.name}, then the next rate. CPU: "
        "the stack's process trees (app, nginx + PgBouncer, PostgreSQL; from /proc) per "
        "request sent.",
        "",
        *_table(header, "r" + "rlrrr" * 2, rows),
        "",
        *cpu,
        f"Peak goodput (the most served in any run): {current.name} "
        f"{current.peak_goodput:.1f} rps, {baseline.name} {baseline.peak_goodput:.1f} rps.",
        "",
    ]


def _method(result: BenchResult) -> list[str]:
    o = result.options
    lines = [
        "## Method",
        "",
        f"- mode: {result.mode}",
        f"- open loop, fixed arrival rate; latency from the scheduled send time; "
        f"client timeout {o.timeout_s:g} s; at most {o.max_in_flight} requests in flight "
        "(one connection each), beyond that a request counts as not sent",
        (
            "- the generator runs SCHED_IDLE, on the CPU the servers leave (real clients "
            "would not take their CPU); when it falls behind, its lag says so and only the "
            "server-side figures are judged"
            if o.generator_idle
            else "- the generator runs at the servers' priority, on the same cores"
        ),
        "- workload: "
        + (
            f"{o.clients} clients, each an account with its own bearer token and its own "
            f"source address (127.0.0.10 + i) with its own keep-alive connections; every "
            f"request is sent by one of them, drawn at random, so nginx's per-client limits "
            f"meet about 1/{o.clients} of the rate per client"
            if o.clients > 1
            else "1 client (one bearer token, one address: nginx's per-client limits meet "
            "the whole rate)"
        )
        + ", 80% GET page of 20 at a random offset over the client's 10,000 seeded items, "
        "20% POST with a unique title; rows created are deleted after each run",
    ]
    if o.baseline:
        lines += [
            f"- --baseline {o.baseline}: that revision's stack from a git worktree, beside the "
            "current code's, at the same fixed rates, alternating; the plain deployment is "
            "not run (Sluice against Sluice)",
            f"- rates {', '.join(f'{r:g}' for r in o.rates)} rps (always with "
            f"{CPU_RATE:g}), {o.duration_s:g} s each",
        ]
    elif o.rates:
        lines.append(
            f"- fixed levels of {o.duration_s:g} s at {', '.join(f'{r:g}' for r in o.rates)} "
            "rps for both deployments (--rates: no capacity search)"
        )
    else:
        lines += [
            f"- capacity, both deployments alike: the highest rate with >= "
            f"{CAPACITY_MIN_OK:.0%} 2xx (refusals, errors, timeouts and not-sent all count "
            f"against it) and 2xx p99 <= {o.target_p99_ms:g} ms; a failed step is run again "
            f"before it counts; steps of {o.search_duration_s:g} s, one of each deployment "
            "in turn",
            f"- levels of {o.duration_s:g} s at "
            f"{', '.join(f'{m:g}x' for m in o.multiples)} the **plain** deployment's "
            "capacity, each against Sluice then plain before the next level",
        ]
    lines += [
        "- goodput: 2xx answered within 1 s of the scheduled send, per second of schedule; "
        "a deployment's peak goodput is the most it served in any run (search steps and "
        "levels)",
        f"- a run whose generator lag p99 is above {LAG_LIMIT_MS:g} ms has its client-side "
        "figures flagged; its targets are judged on the server side (nginx's log) where "
        "there is one",
        "",
    ]
    return lines


def _calibration(result: BenchResult) -> list[str]:
    lines = ["## Generator ceiling", ""]
    if not result.calibration:
        return [*lines, "Not measured (--no-calibration).", ""]
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
    return [*lines, ""]


def _provenance_lines(record: dict[str, str]) -> list[str]:
    if not record:
        return []
    dirty = ", **with uncommitted changes**" if record.get("dirty") == "yes" else ""
    return [
        f"- command: `{record.get('command', '?')}`",
        f"- checkout: {record.get('commit', '?')}{dirty}",
    ]


def checks(result: BenchResult) -> list[Check]:
    """The targets of the issue this run judges: 21 with --baseline, else 20."""
    return criteria.issue21(result) if result.options.baseline else criteria.issue20(result)


def render(result: BenchResult, plots: list[str]) -> str:
    o = result.options
    lines = [
        f"# Sluice overload benchmark, {result.started:%Y-%m-%d %H:%M} UTC"
        + (" (--quick: smoke run, not figures to quote)" if o.quick else ""),
        "",
        f"Mode: **{result.mode}**." + (" " + _ONE_CORE_NOTE if o.one_core else ""),
        "",
        *(
            [f"The generator's threads, by the CPUs they may run on: {result.generator_cpus}.", ""]
            if result.generator_cpus
            else []
        ),
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in result.machine.items()],
        *_provenance_lines(result.provenance),
        "- the generator, the deployments and PostgreSQL share this machine"
        + ("" if o.one_core else " and its cores"),
        "",
        *_method(result),
        *_calibration(result),
    ]
    if result.error:
        lines += [f"**Stopped early:** {result.error}", ""]
    for d in result.deployments:
        lines += [f"## {d.name}: {d.description}", ""]
        if d.error:
            lines += [f"**Incomplete:** {d.error}", ""]
        if not o.baseline:
            capacity = "not searched (--rates)" if o.rates else f"**{d.capacity:.0f} rps**"
            lines += [f"Capacity: {capacity}. Peak goodput: {d.peak_goodput:.1f} rps.", ""]
        lines += _settings_lines(d)
        if d.cpus:
            lines += [f"Threads of its process trees, by the CPUs they may run on: {d.cpus}.", ""]
        if d.search:
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
    if o.baseline:
        lines += [*_statements_section(result), *_before_after_section(result)]
        title = f"## Targets (issue 21: the current code against {o.baseline})"
    else:
        lines += [*_lone_section(result), *_fairness_section(result)]
        title = "## Targets (issue 20)"
    found = checks(result)
    lines += [title, "", *_checks_table(found), "", tally(found) + ".", ""]
    if plots:
        lines += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    lines += [
        f"Total time {result.elapsed_s / 60:.1f} min. How to read this: docs/benchmark.md.",
        "",
    ]
    return "\n".join(lines)


_ONE_CORE_NOTE = (
    "Issue 20's target 5 is targets 1-3 below holding in this mode, with the settings "
    "unchanged (the limits in force are listed per deployment)."
)


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


def _summary_issue20(result: BenchResult) -> list[str]:
    lines = [
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
            f"| {_ms(s.ok_p99_ms)}{admitted_server} | {_share(s.rejected_total, s.scheduled)} "
            f"| {refusal_server} / {_ms(s.rejection_p99_ms)} | {_ms(s.lag_p99_ms)} "
            + (
                f"| {p.goodput_rps:.0f} | {_ms(p.ok_p99_ms)} | {p.timeouts} |"
                if p
                else "| - | - | - |"
            )
        )
    capacity = (
        "Capacity: not searched (--rates)."
        if result.options.rates
        else f"Capacity (>= {CAPACITY_MIN_OK:.0%} 2xx, 2xx p99 <= "
        f"{result.options.target_p99_ms:g} ms): Sluice {sluice.capacity:.0f} rps, plain "
        f"{plain.capacity:.0f} rps; levels at multiples of plain's."
    )
    lines += [
        "",
        capacity + f" Peak goodput: Sluice {sluice.peak_goodput:.0f} rps, plain "
        f"{plain.peak_goodput:.0f} rps.",
    ]
    fair = sluice.fairness.groups.get("light") if sluice.fairness else None
    if fair is not None:
        s = fair.summary
        lines.append(
            f"Fairness: Sluice served {_share(s.ok_within_target, s.scheduled)} of the light "
            f"clients' requests 2xx within {LATENCY_TARGET_MS:g} ms beside the heavy one."
        )
    return lines


def _summary_issue21(result: BenchResult) -> list[str]:
    current, baseline = result.deployments
    lines = [
        f"| offered rps | {current.name} goodput | {baseline.name} goodput "
        f"| {current.name} 2xx p99 ms | {baseline.name} 2xx p99 ms "
        f"| {current.name} CPU ms/request | {baseline.name} CPU ms/request |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in current.levels:
        other = at_rate(baseline, run.rate)
        lines.append(
            f"| {run.rate:g} | {run.summary.goodput_rps:.0f} | {other.summary.goodput_rps:.0f} "
            if other
            else f"| {run.rate:g} | {run.summary.goodput_rps:.0f} | - "
        )
        lines[-1] += (
            f"| {_ms(run.summary.ok_p99_ms)} | {_ms(other.summary.ok_p99_ms) if other else '-'} "
            f"| {cpu_per_request(run):.2f} | {f'{cpu_per_request(other):.2f}' if other else '-'} |"
        )
    statements = []
    for kind in ("read", "create"):
        parts = [
            f"{d.name} {d.statements[kind].per_request:.2f}"
            for d in (current, baseline)
            if kind in d.statements
        ]
        if parts:
            statements.append(f"{kind}: {', '.join(parts)}")
    lines += [
        "",
        "Statements per request (PgBouncer's SHOW STATS): "
        + ("; ".join(statements) or "not measured")
        + f". Peak goodput: {current.name} {current.peak_goodput:.0f} rps, {baseline.name} "
        f"{baseline.peak_goodput:.0f} rps.",
    ]
    return lines


def render_summary(result: BenchResult) -> str:
    """The few figures the README quotes, with the machine and the verdicts."""
    m, o = result.machine, result.options
    against = f"; --baseline {o.baseline}" if o.baseline else ""
    lines = [
        f"Measured {result.started:%Y-%m-%d} on {m.get('cpu', '?')}, {m.get('memory', '?')} "
        f"({result.mode}; {o.clients} client(s); commit {m.get('commit', '?')}{against}):",
        "",
        *(_summary_issue21(result) if o.baseline else _summary_issue20(result)),
        "",
    ]
    found = checks(result)
    lines += [f"Targets: {tally(found)}.", ""]
    lines += [
        f"- {verdict(c.met, unjudged='not judged:')} {c.target}: {c.name} ({c.measured})"
        for c in found
    ]
    return "\n".join([*lines, ""])


def write(result: BenchResult, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    written = plots.write(result, out)
    text = render(result, written)
    (out / "report.md").write_text(text)
    (out / "summary.md").write_text(render_summary(result))
    (out / "results.json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    return text
