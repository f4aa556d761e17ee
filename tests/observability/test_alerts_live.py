"""Alerts reach someone: PgBouncer stops, its alert is delivered, then resolved.

Starts its own stack (port base 25200) with Prometheus scraping and
evaluating every second, SluicePgBouncerDown's `for:` at 5 s (through
PROMETHEUS_ALERT_FOR, in the stack's copy of the rules: the rules themselves
keep the 1 m that promtool tests) and Alertmanager grouping for 1 s. It stops
PgBouncer with `RunningStack.stop_service` and reads the default receiver's
file, where Alertmanager's webhook notifications land, until the alert is
there (firing, with the runbook link), then starts PgBouncer and waits for
the resolved notification. Each within DELIVERY_BOUND_S.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from deploy import observability
from tests.observability.test_prometheus_config import markdown_anchors
from tests.stackctl import RunningStack, local_stack

pytestmark = pytest.mark.stack

PORT_BASE = 25200
ALERT = "SluicePgBouncerDown"
FOR = "5s"
# From PgBouncer stopping to the notification in the file: a scrape (1 s), the
# `for` (5 s), an evaluation (1 s), Alertmanager's group_wait (1 s) and the
# webhook, about 10 s when the machine is quiet; the bound leaves room for a
# loaded one.
DELIVERY_BOUND_S = 60.0


@pytest.fixture(scope="module")
def alerting_stack() -> Iterator[RunningStack]:
    """A stack that alerts within seconds, for this module; stopped at its end."""
    with local_stack(
        "alerts",
        PORT_BASE,
        SLUICE_WORKERS="1",
        PROMETHEUS_SCRAPE_INTERVAL="1s",
        PROMETHEUS_ALERT_FOR=f"{ALERT}={FOR}",
        ALERTMANAGER_GROUP_WAIT="1s",
        ALERTMANAGER_GROUP_INTERVAL="1s",
    ) as running:
        yield running


def _notifications(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _wait_for_alert(path: Path, status: str, since: int) -> tuple[dict[str, Any], float]:
    """The first notification after line `since` that carries ALERT in `status`."""
    started = time.monotonic()
    while time.monotonic() - started < DELIVERY_BOUND_S:
        for notification in _notifications(path)[since:]:
            for alert in notification["alerts"]:
                if alert["labels"]["alertname"] == ALERT and alert["status"] == status:
                    return alert, time.monotonic() - started
        time.sleep(0.25)
    seen = [(n["status"], n["groupLabels"]) for n in _notifications(path)]
    pytest.fail(f"no {status} {ALERT} within {DELIVERY_BOUND_S:g}s; notifications: {seen}")


def test_pgbouncer_down_is_delivered_then_resolved(alerting_stack: RunningStack) -> None:
    alerts = Path(url2pathname(urlsplit(alerting_stack.env["SLUICE_ALERTS_URL"]).path))
    assert alerts == observability.alerts_file(alerting_stack.layout)
    # The file keeps what earlier runs of this stack received: read what follows.
    before = len(_notifications(alerts))
    alerting_stack.stop_service("pgbouncer")
    try:
        firing, fired_after = _wait_for_alert(alerts, "firing", before)
    finally:
        alerting_stack.start_service("pgbouncer")
    print(f"\n{ALERT} delivered {fired_after:.1f}s after PgBouncer stopped")
    assert firing["labels"]["severity"] == "critical"
    assert firing["labels"]["job"] == "pgbouncer"

    # Its runbook, in this checkout's docs.
    runbook = urlsplit(firing["annotations"]["runbook_url"])
    assert runbook.scheme == "file", runbook
    doc = Path(url2pathname(runbook.path))
    assert doc == observability.RUNBOOKS
    assert runbook.fragment == ALERT.lower() in markdown_anchors(doc)

    resolved, resolved_after = _wait_for_alert(alerts, "resolved", before)
    print(f"{ALERT} resolved {resolved_after:.1f}s after PgBouncer was back")
    assert resolved["labels"] == firing["labels"]
