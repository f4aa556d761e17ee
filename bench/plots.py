"""The report's plots, for the README: goodput and 2xx p99 against offered load.

Each deployment's levels are joined by a line (with --baseline, the rate
ladder); its capacity-search steps are the small unjoined markers. Offered
load is on a log scale: the levels are multiples of a capacity (0.5x to 8x).
The goodput plot marks 95 % of Sluice's peak (issue 20's overload target).
The p99 plot has the client side (from the scheduled send) as solid lines and
the server side (nginx's `$request_time`; the plain deployment has no nginx)
as dashed ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.criteria import GOODPUT_OF_PEAK_MIN, LATENCY_TARGET_MS
from bench.results import BenchResult, DeploymentResult, Run

_STYLES = {"sluice": ("tab:blue", "o"), "plain": ("tab:red", "s"), "baseline": ("tab:gray", "^")}
GOODPUT = "goodput.png"
P99 = "p99.png"


def _style(deployment: DeploymentResult) -> tuple[str, str]:
    return _STYLES.get(deployment.name, ("black", "x"))


def _by_rate(runs: list[Run]) -> list[Run]:
    return sorted(runs, key=lambda r: r.summary.offered_rps)


def _server_p99(run: Run) -> float:
    layers = run.server.layers if run.server else None
    return layers.admitted.p99_ms if layers is not None and layers.admitted.count else math.nan


def _offered_axis(ax: Any, rates: list[float]) -> None:
    """Offered load on a log scale, labelled in plain numbers."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if rates:
        ax.set_xlim(min(rates) / 1.3, max(rates) * 1.3)
    ax.set_xlabel("offered load (requests/s, open loop; log scale)")


def write(result: BenchResult, out: Path) -> list[str]:
    """goodput.png and p99.png in `out`; the names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deployments = [d for d in result.deployments if d.levels or d.search]
    if not deployments:
        return []
    mode = f" ({result.mode})" if result.options.one_core else ""

    rates = [r.summary.offered_rps for d in deployments for r in [*d.levels, *d.search]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = max((d.peak_goodput for d in deployments), default=0.0) * 1.25
    for d in deployments:
        color, marker = _style(d)
        levels = _by_rate(d.levels)
        x = [r.summary.offered_rps for r in levels]
        label = d.name + (f" (capacity {d.capacity:.0f})" if d.capacity else "")
        ax.plot(x, [r.summary.goodput_rps for r in levels], marker=marker, color=color, label=label)
        if d.search:
            ax.scatter(
                [r.summary.offered_rps for r in d.search],
                [r.summary.goodput_rps for r in d.search],
                s=12,
                marker=marker,
                color=color,
                alpha=0.35,
            )
    sluice = deployments[0]
    if not result.options.baseline and sluice.peak_goodput:
        ax.axhline(
            GOODPUT_OF_PEAK_MIN * sluice.peak_goodput,
            ls="--",
            color=_style(sluice)[0],
            alpha=0.4,
            label=f"{GOODPUT_OF_PEAK_MIN:.0%} of {sluice.name}'s peak",
        )
    if rates and top:
        # Many points: a straight line on linear axes is a curve on a log axis.
        low, high = min(rates), min(max(rates), top)
        line = [low * (high / low) ** (i / 50) for i in range(51)]
        ax.plot(line, line, ls=":", color="grey", label="goodput = offered")
    _offered_axis(ax, rates)
    ax.set_ylabel("goodput (2xx within 1 s, per s)")
    ax.set_title("Goodput against offered load" + mode)
    ax.set_ylim(0, top or None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / GOODPUT, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for d in deployments:
        color, marker = _style(d)
        levels = _by_rate(d.levels)
        x = [r.summary.offered_rps for r in levels]
        ax.plot(
            x,
            [r.summary.ok_p99_ms for r in levels],
            marker=marker,
            color=color,
            label=f"{d.name}: client side",
        )
        server = [_server_p99(r) for r in levels]
        if any(not math.isnan(v) for v in server):
            ax.plot(
                x,
                server,
                marker=marker,
                color=color,
                ls="--",
                alpha=0.7,
                label=f"{d.name}: server side (nginx)",
            )
    ax.axhline(LATENCY_TARGET_MS, ls=":", color="grey", label="latency target")
    ax.axhline(
        result.options.timeout_s * 1000, ls="-.", color="grey", alpha=0.5, label="client timeout"
    )
    ax.set_yscale("log")
    _offered_axis(ax, rates)
    ax.set_ylabel("2xx p99 (ms)")
    ax.set_title("Admitted (2xx) p99 against offered load" + mode)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / P99, dpi=110)
    plt.close(fig)
    return [GOODPUT, P99]
