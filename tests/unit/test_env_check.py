"""The names under a settings prefix that are not settings stay the ones the deployment uses."""

from __future__ import annotations

import re
from pathlib import Path

from deploy.envfile import read_env_file
from service.env_check import COMPOSE, IMAGES, TEMPLATE_ONLY
from service.env_names import has_settings_prefix
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = [
    ROOT / "nginx" / "templates",
    ROOT / "deploy" / "pgbouncer",
    ROOT / "deploy" / "postgres",
    ROOT / "deploy" / "postgres-exporter",
    ROOT / "deploy" / "pgbouncer-exporter",
    ROOT / "deploy" / "alertmanager",
]
_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def _template_variables() -> set[str]:
    names: set[str] = set()
    for directory in TEMPLATE_DIRS:
        for template in directory.rglob("*.template"):
            names |= set(_VARIABLE.findall(template.read_text()))
    names |= set(read_env_file(ROOT / "deploy" / "defaults.env"))
    return {name for name in names if has_settings_prefix(name)}


def _deployment_text() -> str:
    files = [ROOT / "docker-compose.prod.yml", *sorted((ROOT / "deploy" / "k8s").rglob("*.yaml"))]
    return "\n".join(path.read_text() for path in files)


def test_every_template_variable_is_a_setting_or_listed() -> None:
    unlisted = _template_variables() - Settings.environment_names() - TEMPLATE_ONLY
    assert not unlisted, f"add to service/env_check.py TEMPLATE_ONLY: {sorted(unlisted)}"


def test_every_listed_template_variable_is_read_by_a_template() -> None:
    assert TEMPLATE_ONLY - _template_variables() == set()
    assert not TEMPLATE_ONLY & Settings.environment_names()


def test_the_image_and_compose_names_are_the_ones_the_deployment_sets() -> None:
    text = _deployment_text()
    assert [name for name in sorted(IMAGES | COMPOSE) if name not in text] == []
