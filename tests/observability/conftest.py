"""Helpers shared by the observability tests: the Prometheus tools and paths."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.stackctl import ROOT

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARDS_DIR = ROOT / "grafana" / "dashboards"
CONSOLES_DIR = ROOT / "grafana" / "consoles"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: run `make packages`")
    return found


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env=env, cwd=ROOT
    )
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def recording_rules() -> list[tuple[str, str]]:
    """(record, expr) of every recording rule in deploy/prometheus/rules/."""
    import yaml

    rules: list[tuple[str, str]] = []
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend((r["record"], r["expr"]) for r in group["rules"] if "record" in r)
    return rules


def panel_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in a dashboard JSON file."""
    import json

    found = []
    for panel in json.loads(path.read_text())["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def panel_queries_by_title(console: str) -> list[tuple[str, list[str]]]:
    """(panel title, its queries' legends) of the dashboard a console page draws."""
    import json

    dashboard = json.loads((DASHBOARDS_DIR / console.replace(".html", ".json")).read_text())
    return [
        (panel["title"], [target["legendFormat"] for target in panel["targets"]])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
    ]
