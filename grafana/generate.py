"""Generate Sluice's dashboards: Grafana JSON and the same as Prometheus consoles.

    python grafana/generate.py [--out DIR] [--consoles-out DIR]

Dashboards are code: each panel answers one operator question (its title),
and its queries use the recording rules in deploy/prometheus/rules/ where one
exists. From the one set of definitions below this writes
grafana/dashboards/*.json (provisioned into Grafana in compose, with a
`$datasource` variable), grafana/consoles/*.html (console templates that the
local stack's Prometheus serves: same panels, same queries, drawn by the
console library of Debian's prometheus package); Kubernetes ships the JSON as
a ConfigMap for Grafana's dashboard sidecar (deploy/k8s/base/kustomization.yaml
generates it from these files). tests/observability/ checks the committed files are what
this script writes, evaluates every query against a live, loaded stack and
opens every console in a browser.
"""

from __future__ import annotations

import argparse
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The provisioned data source (grafana/provisioning/datasources/): the
# `$datasource` variable's default, so a Grafana with another Prometheus (a
# cluster's, through the sidecar) picks its own from the dashboard's menu.
DEFAULT_DATASOURCE_UID = "sluice-prometheus"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"
CONSOLES_DIR = HERE / "consoles"
WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    stacked: bool = False
    max_value: float | None = None


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = field(default=("sluice",))


def q(expr: str, legend: str) -> Query:
    return Query(expr=expr, legend=legend)


OVERVIEW = Dashboard(
    uid="sluice-overview",
    title="Sluice / Overview",
    description=(
        "The back-pressure story top to bottom: load offered, admitted and refused, "
        "queue depth at each hop, latency and pool use."
    ),
    rows=(
        Row(
            "Load: offered, admitted, refused",
            (
                Panel(
                    "How much load is offered, admitted and refused?",
                    "Offered: requests nginx received (stub_status, includes health checks). "
                    "Reached the app: requests the app answered. Admitted: requests that "
                    "passed admission control. Refused: every layer's 429/503.",
                    (
                        q("sluice:nginx_requests:rate1m", "offered (nginx)"),
                        q("sluice:http_requests:rate1m", "reached the app"),
                        q("sluice:admitted:rate1m", "admitted"),
                        q("sluice:shed:rate1m", "refused (all layers)"),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Who is refusing requests, and why?",
                    "sluice_shed_total by layer and reason: nginx (rate limit, connection "
                    "cap, from its access log), app (admission queue full / wait timeout / "
                    "deadline), pool, pgbouncer and db (errors mapped to 503).",
                    (q("layer_reason:sluice_shed:rate1m", "{{layer}} / {{reason}}"),),
                    unit="reqps",
                    stacked=True,
                ),
                Panel(
                    "What share of offered requests is refused?",
                    "Refused / offered over 5 minutes. SluiceSheddingHigh fires above 5%.",
                    (q("sluice:shed:ratio5m", "refused share"),),
                    unit="percentunit",
                    kind="stat",
                    width=6,
                    max_value=1,
                ),
                Panel(
                    "Which status codes does nginx answer with?",
                    "nginx responses by status, from its access log (mtail).",
                    (
                        q(
                            "sum by (status) (rate(sluice_nginx_responses_total[1m]))",
                            "{{status}}",
                        ),
                    ),
                    unit="reqps",
                    width=18,
                    stacked=True,
                ),
            ),
        ),
        Row(
            "Queues, front to back",
            (
                Panel(
                    "How many connections is nginx holding?",
                    "stub_status: active = all client connections; reading/writing = "
                    "working on a request; waiting = idle keep-alive connections (not queued "
                    "requests). limit_conn refuses beyond NGINX_MAX_CONNS.",
                    (
                        q("sum(nginx_connections_active)", "active"),
                        q("sum(nginx_connections_reading)", "reading"),
                        q("sum(nginx_connections_writing)", "writing"),
                        q("sum(nginx_connections_waiting)", "waiting (idle keep-alive)"),
                    ),
                    width=8,
                ),
                Panel(
                    "Is Gunicorn's accept queue filling?",
                    "Connections accepted by the kernel but not yet by a worker (LISTEN "
                    "socket receive queue), against the effective backlog.",
                    (
                        q("sum(sluice_listen_backlog)", "queued"),
                        q("sum(sluice_listen_backlog_limit)", "limit"),
                    ),
                    width=8,
                ),
                Panel(
                    "How many requests wait for admission?",
                    "Admission queue depth and in-flight requests, summed over live "
                    "workers, against their limits (Q and L per worker).",
                    (
                        q("sum(sluice_admission_queue_depth)", "waiting"),
                        q('sum(sluice_admission_limit{kind="queue"})', "queue limit"),
                        q("sum(sluice_admission_in_flight)", "in flight"),
                        q('sum(sluice_admission_limit{kind="in_flight"})', "in-flight limit"),
                    ),
                    width=8,
                ),
                Panel(
                    "Are requests waiting for a pool connection?",
                    "Threads blocked in the SQLAlchemy pool's checkout.",
                    (q("sum(sluice_db_pool_waiters)", "pool waiters"),),
                    width=8,
                ),
                Panel(
                    "Are PgBouncer clients waiting for PostgreSQL?",
                    "cl_waiting (clients with a query and no server connection) and maxwait "
                    "(how long the oldest has waited).",
                    (
                        q("sluice:pgbouncer_clients_waiting", "clients waiting"),
                        q("sluice:pgbouncer_client_maxwait_seconds", "longest wait (s)"),
                    ),
                    width=8,
                ),
                Panel(
                    "How full is each bound?",
                    "Fraction of each limit in use, front to back.",
                    (
                        q("sluice:listen_backlog:utilisation", "accept queue"),
                        q("sluice:admission_in_flight:utilisation", "admission slots"),
                        q("sluice:admission_queue:utilisation", "admission queue"),
                        q("sluice:db_pool:utilisation", "SQLAlchemy pool"),
                        q("sluice:pgbouncer_server_connections:utilisation", "PgBouncer pool"),
                        q("sluice:postgres_connections:utilisation", "PostgreSQL connections"),
                    ),
                    unit="percentunit",
                    kind="bargauge",
                    width=8,
                    max_value=1,
                ),
            ),
        ),
        Row(
            "Latency",
            (
                Panel(
                    "How long do requests take, by route?",
                    "p99 and p50 from the app receiving a request to its last byte.",
                    (
                        q("route:sluice_http_request_duration_seconds:p99_1m", "p99 {{route}}"),
                        q("route:sluice_http_request_duration_seconds:p50_1m", "p50 {{route}}"),
                    ),
                    unit="s",
                ),
                Panel(
                    "How long do requests wait before the app runs them?",
                    "p99 of the time between nginx receiving a request and the app starting "
                    "it (X-Request-Start), and of the wait in the admission queue.",
                    (
                        q("sluice:request_queue_seconds:p99_1m", "nginx to app (p99)"),
                        q("sluice:admission_wait_seconds:p99_1m", "admission wait (p99)"),
                    ),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Pool use",
            (
                Panel(
                    "How much of the database pool is in use?",
                    "SQLAlchemy connections checked out, pool size and overflow, summed over "
                    "live workers.",
                    (
                        q("sum(sluice_db_pool_checked_out)", "checked out"),
                        q("sum(sluice_db_pool_size)", "pool size"),
                        q("sum(sluice_db_pool_overflow)", "overflow"),
                    ),
                ),
                Panel(
                    "How long do pool checkouts wait, and do they time out?",
                    "p99 checkout wait, and checkouts that gave up after pool_timeout.",
                    (
                        q("sluice:db_pool_checkout_wait_seconds:p99_1m", "checkout wait p99 (s)"),
                        q("sum(rate(sluice_db_pool_timeouts_total[1m]))", "timeouts/s"),
                    ),
                ),
            ),
        ),
    ),
)

DATABASE = Dashboard(
    uid="sluice-database",
    title="Sluice / Database and pools",
    description="SQLAlchemy pool, PgBouncer and PostgreSQL: use, waits and errors.",
    rows=(
        Row(
            "SQLAlchemy pool (per app, summed over workers)",
            (
                Panel(
                    "Are the database hops up?",
                    "1 = Prometheus scrapes the exporter and it reaches its server.",
                    (
                        q('up{job="postgres"}', "postgres exporter"),
                        q("pg_up", "PostgreSQL"),
                        q('up{job="pgbouncer"}', "pgbouncer exporter"),
                        q("pgbouncer_up", "PgBouncer"),
                    ),
                    kind="stat",
                    width=8,
                ),
                Panel(
                    "How many pool connections are checked out?",
                    "Checked out against pool size; overflow above pool_size.",
                    (
                        q("sum(sluice_db_pool_checked_out)", "checked out"),
                        q("sum(sluice_db_pool_size)", "pool size"),
                        q("sum(sluice_db_pool_overflow)", "overflow"),
                    ),
                    width=16,
                ),
                Panel(
                    "Are checkouts waiting or timing out?",
                    "Threads waiting in checkout, and checkouts that hit pool_timeout (503 "
                    "db_pool_timeout).",
                    (
                        q("sum(sluice_db_pool_waiters)", "waiting"),
                        q("sum(rate(sluice_db_pool_timeouts_total[1m]))", "timeouts/s"),
                    ),
                ),
                Panel(
                    "How are checkout waits distributed?",
                    "Checkout wait histogram (per second, by bucket).",
                    (
                        q(
                            "sum by (le) (rate(sluice_db_pool_checkout_wait_seconds_bucket[1m]))",
                            "{{le}}",
                        ),
                    ),
                    kind="heatmap",
                ),
                Panel(
                    "Which database errors become 503s?",
                    "Database errors the app mapped to 503 + Retry-After, by reason.",
                    (
                        q(
                            "sum by (reason) (rate(sluice_db_errors_total[1m]))",
                            "{{reason}}",
                        ),
                    ),
                    unit="reqps",
                    width=24,
                ),
            ),
        ),
        Row(
            "PgBouncer",
            (
                Panel(
                    "How many PgBouncer clients are active or waiting?",
                    "cl_active (linked to a server connection) and cl_waiting.",
                    (
                        q(
                            "sum by (database) (pgbouncer_pools_client_active_connections)",
                            "active {{database}}",
                        ),
                        q(
                            "sum by (database) (pgbouncer_pools_client_waiting_connections)",
                            "waiting {{database}}",
                        ),
                    ),
                    width=8,
                ),
                Panel(
                    "How long has the oldest PgBouncer client waited?",
                    "maxwait per pool; past query_wait_timeout the client gets an error "
                    "(503 pgbouncer_wait_timeout).",
                    (
                        q(
                            "max by (database) (pgbouncer_pools_client_maxwait_seconds)",
                            "{{database}}",
                        ),
                    ),
                    unit="s",
                    width=8,
                ),
                Panel(
                    "How many PgBouncer server connections are in use?",
                    "sv_active and sv_idle against default_pool_size.",
                    (
                        q("sum(pgbouncer_pools_server_active_connections)", "active"),
                        q("sum(pgbouncer_pools_server_idle_connections)", "idle"),
                        q("sum(pgbouncer_databases_pool_size)", "pool size"),
                    ),
                    width=8,
                ),
                Panel(
                    "How many queries does PgBouncer pool, and how long do clients wait?",
                    "Queries per second, and seconds of client waiting per second (SHOW "
                    "STATS total_wait_time).",
                    (
                        q(
                            "sum(rate(pgbouncer_stats_queries_pooled_total[1m]))",
                            "queries/s",
                        ),
                        q(
                            "sum(rate(pgbouncer_stats_client_wait_seconds_total[1m]))",
                            "client wait (s/s)",
                        ),
                    ),
                    width=24,
                ),
            ),
        ),
        Row(
            "PostgreSQL",
            (
                Panel(
                    "How many PostgreSQL connections, in which state?",
                    "pg_stat_activity by state against max_connections.",
                    (
                        q(
                            "sum by (state) (pg_stat_activity_count)",
                            "{{state}}",
                        ),
                        q("max(pg_settings_max_connections)", "max_connections"),
                    ),
                ),
                Panel(
                    "How many transactions commit or roll back?",
                    "pg_stat_database commits and rollbacks per second, by database.",
                    (
                        q(
                            "sum by (datname) (rate(pg_stat_database_xact_commit"
                            '{datname!~"template.*|"}[1m]))',
                            "commit {{datname}}",
                        ),
                        q(
                            "sum by (datname) (rate(pg_stat_database_xact_rollback"
                            '{datname!~"template.*|"}[1m]))',
                            "rollback {{datname}}",
                        ),
                    ),
                    unit="ops",
                ),
            ),
        ),
    ),
)

DASHBOARDS = (OVERVIEW, DATABASE)


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.max_value is not None:
        defaults.update(min=0, max=panel.max_value)
    options: dict[str, Any] = {}
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 20 if panel.stacked else 0,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
        }
        options = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["max"]}}
    elif panel.kind == "bargauge":
        options = {"orientation": "horizontal", "displayMode": "gradient"}
    elif panel.kind == "heatmap":
        options = {"calculate": False, "yAxis": {"unit": "s"}}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                **({"format": "heatmap"} if panel.kind == "heatmap" else {}),
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id, y = 1, 0
    for row in dashboard.rows:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y, x, line_height = panel_id + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id, x, line_height = panel_id + 1, x + panel.width, max(line_height, panel.height)
        y += line_height
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-30m", "to": "now"},
        "timezone": "browser",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": DEFAULT_DATASOURCE_UID},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                }
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def dashboard_json(dashboard: Dashboard) -> str:
    return json.dumps(render(dashboard), indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------
# Prometheus console templates: the same panels, drawn by prom_console.js

# Grafana unit -> (y axis title, suffix after each value).
_CONSOLE_UNITS = {
    "reqps": ("requests per second", " req/s"),
    "ops": ("per second", "/s"),
    "s": ("seconds", " s"),
    "percentunit": ("share (1 = 100 %)", ""),
    "short": ("", ""),
}
# prom_console.js and what it draws with, from the static files of Debian's
# prometheus package. Not prom.lib's "prom_console_head": Debian's copy loads
# popper.js from a path that is a directory there and a d3.layout file the
# package does not ship (script errors on every page); the rest of prom.lib
# (the time control, the page's frame) is used as it is.
_STATIC = "{{ pathPrefix }}/classic/static"
_CONSOLE_HEAD = "\n".join(
    [
        *(
            f'<link type="text/css" rel="stylesheet" href="{_STATIC}/{css}">'
            for css in (
                "rickshaw/rickshaw.min.css",
                "bootstrap4/css/bootstrap.min.css",
                "css/prom_console.css",
                "vendor/bootstrap4-glyphicons/css/bootstrap-glyphicons.css",
            )
        ),
        *(
            f'<script src="{_STATIC}/{js}"></script>'
            for js in (
                "d3/d3.min.js",
                "rickshaw/rickshaw.min.js",
                "jquery/jquery.min.js",
                "popper.js/umd/popper.min.js",
                "bootstrap4/js/bootstrap.min.js",
            )
        ),
        '<script>var PATH_PREFIX = "{{ pathPrefix }}";</script>',
        f'<script src="{_STATIC}/js/prom_console.js"></script>',
    ]
)
_CONSOLE_STYLE = """\
<style>
  body { padding: 0 1rem 2rem; }
  .sluice-nav { margin: 0.75rem 0; }
  .sluice-nav a { margin-right: 1.25rem; }
  .sluice-row { display: flex; flex-wrap: wrap; gap: 0 1.5rem; }
  .sluice-panel { box-sizing: border-box; margin-bottom: 1.5rem; }
  .sluice-panel h3 { font-size: 1.05rem; margin: 0.5rem 0 0.25rem; }
  .sluice-panel p { color: #555; font-size: 0.85rem; margin: 0 0 0.25rem; }
</style>"""


def _legend(legend: str) -> str:
    """Grafana's `{{label}}` is prom_console.js's `[[label]]`."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", r"[[\1]]", legend)


def _console_panel(panel: Panel, panel_id: int) -> str:
    title, units = _CONSOLE_UNITS[panel.unit]
    graph: dict[str, Any] = {
        "expr": [query.expr for query in panel.queries],
        "name": [_legend(query.legend) for query in panel.queries],
        "renderer": "area" if panel.stacked else "line",
        "yTitle": title,
        "yUnits": units,
        "height": 180,
    }
    if panel.max_value is not None:
        graph.update(min=0, max=panel.max_value)
    width = f"calc({100 * panel.width / WIDTH:.4g}% - 1.5rem)"
    options = json.dumps(graph, sort_keys=True)
    return f"""\
<div class="sluice-panel" id="panel-{panel_id}" style="width: {width}">
  <h3>{html.escape(panel.title)}</h3>
  <p>{html.escape(panel.description)}</p>
  <div class="sluice-graph" id="graph-{panel_id}"></div>
  <script>
  new PromConsole.Graph(Object.assign({{node: document.querySelector("#graph-{panel_id}")}},
    {options}));
  </script>
</div>"""


def _console_page(title: str, body: str) -> str:
    links = " ".join(
        f'<a href="{{{{ pathPrefix }}}}/consoles/{d.uid}.html">{html.escape(d.title)}</a>'
        for d in DASHBOARDS
    )
    return f"""\
{{{{/* Generated by grafana/generate.py from the dashboards' definitions: do not edit. */}}}}
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
{_CONSOLE_HEAD}
{_CONSOLE_STYLE}
</head>
<body>
<nav class="sluice-nav">
  <a href="{{{{ pathPrefix }}}}/consoles/index.html">Dashboards</a> {links}
  <a href="{{{{ pathPrefix }}}}/alerts">Alerts</a>
  <a href="{{{{ pathPrefix }}}}/graph">Query</a>
</nav>
{{{{ template "prom_content_head" . }}}}
{body}
{{{{ template "prom_content_tail" . }}}}
{{{{ template "tail" }}}}
"""


def console(dashboard: Dashboard) -> str:
    """A dashboard as a Prometheus console template."""
    parts = [
        f"<h1>{html.escape(dashboard.title)}</h1>",
        f"<p>{html.escape(dashboard.description)}</p>",
    ]
    panel_id = 1
    for row in dashboard.rows:
        parts.append(f"<h2>{html.escape(row.title)}</h2>")
        parts.append('<div class="sluice-row">')
        for panel in row.panels:
            parts.append(_console_panel(panel, panel_id))
            panel_id += 1
        parts.append("</div>")
    return _console_page(dashboard.title, "\n".join(parts))


def console_index() -> str:
    items = "\n".join(
        f'  <li><a href="{{{{ pathPrefix }}}}/consoles/{d.uid}.html">{html.escape(d.title)}</a>: '
        f"{html.escape(d.description)}</li>"
        for d in DASHBOARDS
    )
    body = (
        "<h1>Sluice dashboards</h1>\n"
        "<p>The panels of the Grafana dashboards in grafana/dashboards/, same queries, "
        "served by this Prometheus.</p>\n"
        f"<ul>\n{items}\n</ul>"
    )
    return _console_page("Sluice dashboards", body)


def write(out_dir: Path, consoles_dir: Path = CONSOLES_DIR) -> list[Path]:
    written = []
    files: list[tuple[Path, str]] = [
        (out_dir / f"{d.uid}.json", dashboard_json(d)) for d in DASHBOARDS
    ]
    files += [(consoles_dir / f"{d.uid}.html", console(d)) for d in DASHBOARDS]
    files.append((consoles_dir / "index.html", console_index()))
    for path, text in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="the Grafana JSON")
    parser.add_argument("--consoles-out", type=Path, default=CONSOLES_DIR)
    args = parser.parse_args(argv)
    for path in write(args.out, args.consoles_out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
