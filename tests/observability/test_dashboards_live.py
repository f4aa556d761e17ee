"""The dashboards are true: every panel's and recording rule's query returns data.

And the local stack shows them: every console page Prometheus serves
(grafana/consoles/, generated with the Grafana JSON) opened in Debian's
chromium while the stack serves a steady load, each panel drawn with data.

Starts its own small stack (port base 25100) with Prometheus scraping every
second and limits small enough that a short burst is refused at nginx (rate
limit, connection cap) and by admission (requests that waited too long in
front of the app), and one request whose
statement times out on a locked table (a database error, 503). The pool is
never exhausted: it has one connection per admission slot (max_in_flight),
so its timeout counter is there at zero; tests/unit/test_db_errors.py
exhausts it by holding its only connection. Then it asks Prometheus for
every query.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx
import psycopg2
import pytest

from tests.api import Api
from tests.observability.conftest import (
    DASHBOARDS_DIR,
    panel_queries,
    panel_queries_by_title,
    recording_rules,
)
from tests.stackctl import RunningStack, local_stack

pytestmark = pytest.mark.stack

PORT_BASE = 25100
BURST_REQUESTS = 300
BURST_CONCURRENCY = 16
BURST_DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def loaded_stack() -> Iterator[RunningStack]:
    """A small stack with Prometheus, for this module; stopped at its end."""
    with local_stack(
        "observability",
        PORT_BASE,
        PROMETHEUS_SCRAPE_INTERVAL="1s",
        SLUICE_WORKERS="1",
        SLUICE_MAX_IN_FLIGHT="2",
        SLUICE_QUEUE_LENGTH="2",
        # The statement timeout is what is left of the deadline: keep it short.
        SLUICE_REQUEST_DEADLINE_MS="2000",
        # 40 requests/s per client at nginx, burst 20 (service/sizing.py).
        SLUICE_SERVICE_TIME_MS="50",
    ) as running:
        yield running


def _burst(base_url: str, headers: dict[str, str]) -> Counter[int]:
    """BURST_REQUESTS GETs, BURST_CONCURRENCY at a time, bounded by BURST_DEADLINE_S."""
    deadline = time.monotonic() + BURST_DEADLINE_S
    limits = httpx.Limits(max_connections=BURST_CONCURRENCY)
    with httpx.Client(base_url=base_url, timeout=5.0, limits=limits) as client:

        def one(_: int) -> int:
            if time.monotonic() > deadline:
                return 0
            try:
                return client.get("/api/v1/items/", headers=headers).status_code
            except httpx.TransportError:
                return -1

        with ThreadPoolExecutor(BURST_CONCURRENCY) as pool:
            return Counter(pool.map(one, range(BURST_REQUESTS)))


def _statement_timeout(app_url: str, database_url: str, headers: dict[str, str]) -> int:
    """One GET while `items` is locked: its statement times out at the deadline."""
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
            return httpx.get(f"{app_url}/api/v1/items/", headers=headers, timeout=15).status_code
    finally:
        conn.rollback()
        conn.close()


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(1)


@pytest.fixture(scope="module")
def prometheus(loaded_stack: RunningStack) -> str:
    """Prometheus's URL once the burst has been refused and scraped."""
    url = loaded_stack.env["SLUICE_PROMETHEUS_URL"]
    api = Api(loaded_stack.url)
    try:
        _, headers = api.new_user()
    finally:
        api.close()
    # Through nginx: per-client rate limit (429) and connection cap (503).
    edge = _burst(loaded_stack.url, headers)
    # Straight at Gunicorn, as if they had waited a second in front of it: the
    # app refuses them as late (a direct burst just waits in the accept queue).
    stale = {**headers, "X-Request-Start": f"t={time.time() - 1:.3f}"}
    app = _burst(loaded_stack.env["SLUICE_APP_URL"], stale)
    assert edge[429] and edge[503], f"nginx did not shed: {edge}"
    assert app[503], f"the app did not shed: {app}"
    timed_out = _statement_timeout(
        loaded_stack.env["SLUICE_APP_URL"], loaded_stack.database_url, headers
    )
    assert timed_out == 503, f"the locked statement was answered {timed_out}"

    def shed_seen() -> bool:
        layers = {r["metric"].get("layer") for r in _query(url, "layer_reason:sluice_shed:rate1m")}
        return {"nginx", "app", "db"} <= layers

    _wait_for(shed_seen, 30, "Prometheus to see refusals by nginx, the app and the database")
    return url


def _missing(prometheus: str, queries: list[tuple[str, str]], wait_s: float = 20.0) -> list[str]:
    """The queries that return no data, after waiting up to `wait_s` for them.

    Rules built on other recording rules get data one evaluation later than
    those, so a query that is empty at first is asked again for a while.
    """
    deadline = time.monotonic() + wait_s
    while True:
        missing = [f"{name}: {expr}" for name, expr in queries if not _query(prometheus, expr)]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(1)


def test_every_recording_rule_returns_data(prometheus: str) -> None:
    rules = recording_rules()
    assert rules
    missing = _missing(prometheus, rules)
    assert not missing, "recording rules with no data:\n  " + "\n  ".join(missing)


@pytest.mark.parametrize(
    "dashboard", sorted(p.name for p in DASHBOARDS_DIR.glob("*.json")), ids=str
)
def test_every_panel_returns_data(prometheus: str, dashboard: str) -> None:
    queries = panel_queries(DASHBOARDS_DIR / dashboard)
    assert queries
    missing = _missing(prometheus, queries)
    assert not missing, f"{dashboard} panels with no data:\n  " + "\n  ".join(missing)


def test_every_target_is_up(prometheus: str) -> None:
    down = [r["metric"] for r in _query(prometheus, "up") if r["value"][1] != "1"]
    assert not down
    jobs = {r["metric"]["job"] for r in _query(prometheus, "up")}
    assert jobs == {
        "sluice",
        "nginx",
        "nginx_log",
        "pgbouncer",
        "postgres",
        "prometheus",
        "alertmanager",
    }


# --------------------------------------------------------------------------
# The local dashboards, in a real browser, while the stack is under load

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The last 10 minutes (prom_console.js reads its time range from the hash).
RECENT = "#pctc" + quote(json.dumps({"duration": 600, "endTime": 0}))
LOAD_RPS = 20
# Quantiles of the last minute that the load must have fed before a page
# shows them as lines (a few evaluations of 1 s, LOAD_WARMUP_S).
LOAD_DRAWN_RULES = (
    "route:sluice_http_request_duration_seconds:p99_1m",
    "sluice:request_queue_seconds:p99_1m",
    "sluice:admission_wait_seconds:p99_1m",
)
LOAD_WARMUP_S = 5


@contextlib.contextmanager
def _steady_load(base_url: str, headers: dict[str, str]) -> Iterator[Counter[int]]:
    """GETs through nginx at LOAD_RPS until the block ends; yields the status counts."""
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=base_url, timeout=5.0) as client:
            while not stop.wait(1 / LOAD_RPS):
                try:
                    statuses[client.get("/api/v1/items/", headers=headers).status_code] += 1
                except httpx.TransportError:
                    statuses[-1] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(timeout=10)


_PANELS_DRAWN = """() => [...document.querySelectorAll('.sluice-graph')].every(
    g => g.querySelector('.rickshaw_legend li, .prom_graph_error'))"""
_PANELS = """() => [...document.querySelectorAll('.sluice-panel')].map(p => ({
    title: p.querySelector('h3').textContent,
    error: (p.querySelector('.prom_graph_error') || {}).textContent || '',
    legend: [...p.querySelectorAll('.rickshaw_legend .label')].map(l => l.textContent),
    lines: [...p.querySelectorAll('svg path.path, svg path.area')]
        .filter(path => (path.getAttribute('d') || '').includes('L')).length,
}))"""


def test_every_local_dashboard_draws_every_panel(
    prometheus: str, loaded_stack: RunningStack
) -> None:
    """Each console page of Prometheus, as a browser draws it: every panel has data."""
    from playwright.sync_api import sync_playwright

    api = Api(loaded_stack.url)
    try:
        _, headers = api.new_user()
    finally:
        api.close()
    index = loaded_stack.env["SLUICE_DASHBOARDS_URL"]
    assert index.startswith(prometheus)
    failures: list[str] = []
    with _steady_load(loaded_stack.url, headers) as served, sync_playwright() as playwright:
        # The latency panels are quantiles over the last minute: NaN (no line)
        # until the load has run a few evaluations, if the burst is older.
        _wait_for(
            lambda: all(_query(prometheus, f"{rule} >= 0") for rule in LOAD_DRAWN_RULES),
            30,
            "Prometheus to see the steady load",
        )
        time.sleep(LOAD_WARMUP_S)
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(index)
            links = page.eval_on_selector_all(
                "li a[href*='/consoles/']", "links => links.map(a => a.href)"
            )
            assert len(links) == len(list(DASHBOARDS_DIR.glob("*.json"))), links
            for link in links:
                page.goto(link + RECENT)
                page.wait_for_function(_PANELS_DRAWN, timeout=30_000)
                panels = page.evaluate(_PANELS)
                queries = dict(panel_queries_by_title(link.rsplit("/", 1)[1]))
                assert {p["title"] for p in panels} == set(queries), link
                for panel in panels:
                    where = f"{link.rsplit('/', 1)[1]}: {panel['title']}"
                    if panel["error"] or not panel["legend"]:
                        failures.append(f"{where}: drew nothing ({panel['error'] or 'no series'})")
                    elif not panel["lines"]:
                        failures.append(f"{where}: series {panel['legend']} but no line")
                    for legend in queries[panel["title"]]:
                        if "{{" not in legend and legend not in panel["legend"]:
                            failures.append(f"{where}: no {legend!r} series")
            assert not errors, errors
        finally:
            browser.close()
    assert served[200] > 0, f"no load was served while browsing: {served}"
    assert not failures, "panels that drew no data:\n  " + "\n  ".join(failures)
