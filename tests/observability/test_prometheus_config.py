"""promtool checks of the Prometheus config, rules and rule unit tests."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

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
    "PROMETHEUS_TARGET_ALERTMANAGER": "alertmanager:9093",
    "PROMETHEUS_RUNBOOK_URL": "https://git.example.com/sluice/blob/main/docs/observability.md",
}


def _render(tmp_path: Path, values: dict[str, str]) -> Path:
    env = clean_environ()
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
    env = clean_environ()
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


# runbook_url: the deployment's base (external label runbook_base, set from
# PROMETHEUS_RUNBOOK_URL) or, where none is set, the file's path in the repo.
_RUNBOOK_URL = re.compile(
    r'\{\{ or \$externalLabels\.runbook_base "(?P<path>[\w/.-]+\.md)" \}\}#(?P<anchor>[a-z0-9-]+)'
)


def _alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def markdown_anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, spaces to dashes, punctuation dropped."""
    headings = re.findall(r"(?m)^#+\s+(.+?)\s*$", path.read_text())
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_runbook_url_resolves_to_its_runbook(tmp_path: Path) -> None:
    alerts = _alerts()
    assert alerts
    for rule in alerts:
        url = rule["annotations"]["runbook_url"]
        match = _RUNBOOK_URL.fullmatch(url)
        assert match, f"{rule['alert']}: runbook_url {url!r} is not base + anchor"
        doc = ROOT / match["path"]
        assert doc.exists(), f"{rule['alert']}: {match['path']} does not exist"
        assert match["anchor"] == rule["alert"].lower()
        assert match["anchor"] in markdown_anchors(doc), f"no runbook {doc.name}#{match['anchor']}"
    # Every shape sets the base: the external label comes from the config template.
    config = _render(
        tmp_path, {**COMPOSE_VALUES, "PROMETHEUS_RULES_DIR": str(PROMETHEUS_DIR / "rules")}
    )
    labels = yaml.safe_load(config.read_text())["global"]["external_labels"]
    assert labels["runbook_base"] == COMPOSE_VALUES["PROMETHEUS_RUNBOOK_URL"]


def test_the_local_stack_links_the_checkouts_runbooks(tmp_path: Path) -> None:
    from deploy.environment import stack_environment
    from deploy.layout import Layout

    env = stack_environment(Layout(state=tmp_path, port_base=24900), {"PATH": os.environ["PATH"]})
    url = env["PROMETHEUS_RUNBOOK_URL"]
    assert url == (ROOT / "docs" / "observability.md").as_uri()
