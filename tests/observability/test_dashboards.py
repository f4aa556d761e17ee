"""The committed dashboards are what grafana/generate.py writes, and well formed."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import yaml

from tests.observability.conftest import CONSOLES_DIR, DASHBOARDS_DIR, run
from tests.stackctl import ROOT


def test_dashboards_and_consoles_match_the_generator(tmp_path: Path) -> None:
    out, consoles = tmp_path / "dashboards", tmp_path / "consoles"
    generator = str(ROOT / "grafana" / "generate.py")
    run([sys.executable, generator, "--out", str(out), "--consoles-out", str(consoles)])
    for generated_dir, committed_dir in ((out, DASHBOARDS_DIR), (consoles, CONSOLES_DIR)):
        generated = sorted(p.name for p in generated_dir.iterdir())
        committed = sorted(p.name for p in committed_dir.iterdir())
        assert generated == committed, "run `make grafana`"
        for name in generated:
            assert (generated_dir / name).read_text() == (committed_dir / name).read_text(), (
                f"{committed_dir.name}/{name} drifted from grafana/generate.py: run `make grafana`"
            )


def test_one_question_per_panel_and_a_datasource_variable() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    for path in DASHBOARDS_DIR.glob("*.json"):
        dashboard = json.loads(path.read_text())
        (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
        assert variable["type"] == "datasource" and variable["query"] == "prometheus"
        # Provisioned Grafana opens on the provisioned source; any other picks its own.
        assert variable["current"]["value"] == uid
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        titles = [p["title"] for p in panels]
        assert len(titles) == len(set(titles)), f"{path.name}: duplicate panel titles"
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in panels:
            assert panel["title"].endswith("?"), f"{panel['title']!r} is not a question"
            assert panel["description"]
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"


def test_each_console_has_every_panel_and_query_of_its_dashboard() -> None:
    """Same questions, same queries: the console draws what the Grafana JSON shows."""
    for path in DASHBOARDS_DIR.glob("*.json"):
        dashboard = json.loads(path.read_text())
        console = (CONSOLES_DIR / f"{dashboard['uid']}.html").read_text()
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert f"<h3>{html.escape(panel['title'])}</h3>" in console, panel["title"]
            for target in panel["targets"]:
                assert json.dumps(target["expr"]) in console, target["expr"]
