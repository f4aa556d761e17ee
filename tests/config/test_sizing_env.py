"""deploy/sizing.env is what service/sizing.py derives from the inputs it records."""

from __future__ import annotations

from deploy.envfile import read_env_file
from tests.config import deployment


def test_sizing_env_matches_the_sizing_module() -> None:
    values = read_env_file(deployment.SIZING_ENV)
    assert deployment.sizing_env_problems(values) == []


def test_sizing_env_is_consistent_for_the_settings_check() -> None:
    """The app refuses inconsistent limits at start; the committed ones pass."""
    values = read_env_file(deployment.SIZING_ENV)
    settings = deployment.settings_from_env(values)
    assert settings.replicas == int(values["SLUICE_REPLICAS"])
    assert settings.limits.workers == int(values["SLUICE_CPU_CORES"])


def test_a_changed_input_is_reported_as_drift() -> None:
    values = read_env_file(deployment.SIZING_ENV)
    values["SLUICE_REPLICAS"] = str(int(values["SLUICE_REPLICAS"]) + 2)
    problems = deployment.sizing_env_problems(values)
    assert any("SLUICE_MAX_IN_FLIGHT" in p or "PGBOUNCER_MAX_CLIENT_CONN" in p for p in problems)
    assert "make sizing-staging" in problems[-1]


def test_a_hand_edited_limit_is_reported_as_drift() -> None:
    values = read_env_file(deployment.SIZING_ENV)
    values["PGBOUNCER_DEFAULT_POOL_SIZE"] = "500"
    assert any(
        "PGBOUNCER_DEFAULT_POOL_SIZE=500" in p for p in deployment.sizing_env_problems(values)
    )
