"""promtool checks of the Prometheus config, rules and rule unit tests."""

from __future__ import annotations

import os
from pathlib import Path

from tests.observability.conftest import PROMETHEUS_DIR, run, tool
from tests.stackctl import ROOT, clean_environ

# The values compose uses (service names on the internal network).
COMPOSE_VALUES = {
    "PROMETHEUS_SCRAPE_INTERVAL": "15s",
    "PROMETHEUS_SCRAPE_TIMEOUT": "10s",
    "PROMETHEUS_EVALUATION_INTERVAL": "15s",
    "PROMETHEUS_DEPLOYMENT": "staging",
    "PROMETHEUS_APP_DISCOVERY": "dns_sd_configs: [{names: [app], type: A, port: 9200}]",
    "PROMETHEUS_TARGET_NGINX": "nginx-exporter:9113",
    "PROMETHEUS_TARGET_NGINX_LOG": "nginx-log-exporter:3903",
    "PROMETHEUS_TARGET_PGBOUNCER": "pgbouncer-exporter:9127",
    "PROMETHEUS_TARGET_POSTGRES": "postgres-exporter:9187",
    "PROMETHEUS_TARGET_PROMETHEUS": "localhost:9090",
}


def _render(tmp_path: Path, values: dict[str, str]) -> Path:
    env = {k: v for k, v in clean_environ().items() if not k.startswith("PROMETHEUS_")}
    env.update(values)
    run([str(ROOT / "deploy" / "render-templates.sh"), str(PROMETHEUS_DIR), str(tmp_path)], env)
    return tmp_path / "prometheus.yml"


def test_rendered_config_is_valid(tmp_path: Path) -> None:
    # The rules directory is where the rendered config points (compose mounts
    # deploy/prometheus/rules there), so `check config` checks the rules too.
    config = _render(
        tmp_path, {**COMPOSE_VALUES, "PROMETHEUS_RULES_DIR": str(PROMETHEUS_DIR / "rules")}
    )
    result = run([tool("promtool"), "check", "config", str(config)])
    assert "SUCCESS" in result.stdout + result.stderr
    text = config.read_text()
    for value in COMPOSE_VALUES.values():
        assert value in text


def test_render_refuses_a_missing_variable(tmp_path: Path) -> None:
    values = dict(COMPOSE_VALUES, PROMETHEUS_RULES_DIR="/etc/prometheus/rules")
    del values["PROMETHEUS_APP_DISCOVERY"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    env.update(values)
    import subprocess

    result = subprocess.run(
        [str(ROOT / "deploy" / "render-templates.sh"), str(PROMETHEUS_DIR), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "PROMETHEUS_APP_DISCOVERY" in result.stderr


def test_rules_are_valid() -> None:
    rules = sorted(str(p) for p in (PROMETHEUS_DIR / "rules").glob("*.yml"))
    assert rules
    run([tool("promtool"), "check", "rules", *rules])


def test_rule_unit_tests_pass() -> None:
    tests = sorted(str(p) for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    run([tool("promtool"), "test", "rules", *tests])


def test_every_alert_is_documented_and_tested() -> None:
    """STYLE #9: CamelCase name, for:, severity, summary, description, runbook; tested."""
    import re

    import yaml

    tested = "\n".join(p.read_text() for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    runbooks = (ROOT / "docs" / "observability.md").read_text().lower()
    alerts = [
        rule
        for path in (PROMETHEUS_DIR / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert alerts
    for rule in alerts:
        name = rule["alert"]
        assert re.fullmatch(r"(?:[A-Z][a-z0-9]+)+", name), name
        assert "for" in rule, name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys(), name
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert f"## {anchor}" in runbooks, f"{name}: no runbook section {anchor}"
        firing = re.findall(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels", tested)
        silent = re.findall(rf"alertname: {name}\n\s+exp_alerts: \[\]", tested)
        assert firing and silent, f"{name} needs a firing and a must-not-fire test"
