"""The committed dashboards are what grafana/generate.py writes, and well formed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from tests.observability.conftest import DASHBOARDS_DIR, run
from tests.stackctl import ROOT


def test_dashboards_match_the_generator(tmp_path: Path) -> None:
    run([sys.executable, str(ROOT / "grafana" / "generate.py"), "--out", str(tmp_path)])
    generated = sorted(p.name for p in tmp_path.glob("*.json"))
    committed = sorted(p.name for p in DASHBOARDS_DIR.glob("*.json"))
    assert generated == committed, "run `python grafana/generate.py`"
    for name in generated:
        assert (tmp_path / name).read_text() == (DASHBOARDS_DIR / name).read_text(), (
            f"{name} drifted from grafana/generate.py: run `python grafana/generate.py`"
        )


def test_one_question_per_panel_and_known_datasource() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    for path in DASHBOARDS_DIR.glob("*.json"):
        dashboard = json.loads(path.read_text())
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        titles = [p["title"] for p in panels]
        assert len(titles) == len(set(titles)), f"{path.name}: duplicate panel titles"
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in panels:
            assert panel["title"].endswith("?"), f"{panel['title']!r} is not a question"
            assert panel["description"]
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == uid
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid
