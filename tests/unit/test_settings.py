"""Settings refuse what they would otherwise ignore."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from dotenv import dotenv_values

from service.settings import Settings, UnknownSetting
from service.sizing import Sizing


def test_a_misspelt_setting_is_refused_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_MAX_INFLIGHT", "99")
    with pytest.raises(
        UnknownSetting, match=r"SLUICE_MAX_INFLIGHT \(did you mean SLUICE_MAX_IN_FLIGHT\?\)"
    ):
        Settings(environment="test")


def test_a_name_close_to_nothing_points_at_the_example_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_ZZZZ", "1")
    with pytest.raises(UnknownSetting, match=r"SLUICE_ZZZZ \(see \.env\.example"):
        Settings(environment="test")


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        # One limit replaced them; the closest name would be the wrong one.
        ("SLUICE_THREADPOOL_TOKENS", "removed: SLUICE_MAX_IN_FLIGHT sets the threadpool size"),
        ("SLUICE_DB_POOL_SIZE", "removed: SLUICE_MAX_IN_FLIGHT sets the pool size"),
        # Template-read limits have one, bare, name.
        ("SLUICE_PGBOUNCER_MAX_CLIENT_CONN", "did you mean PGBOUNCER_MAX_CLIENT_CONN?"),
    ],
)
def test_a_removed_name_is_refused_with_its_replacement(
    monkeypatch: pytest.MonkeyPatch, name: str, hint: str
) -> None:
    monkeypatch.setenv(name, "4")
    with pytest.raises(UnknownSetting, match=re.escape(f"{name} ({hint})")):
        Settings(environment="test")


def test_every_limit_is_a_setting_of_the_same_name() -> None:
    overrides = {f.name for f in dataclasses.fields(Sizing)}
    assert overrides <= Settings.model_fields.keys()


def test_the_environment_names_follow_one_rule() -> None:
    names = Settings.environment_names()
    assert {"SLUICE_MAX_IN_FLIGHT", "SLUICE_DB_HOST", "POSTGRES_MAX_CONNECTIONS"} <= names
    assert {"NGINX_RATE_PER_CLIENT", "PGBOUNCER_QUERY_WAIT_TIMEOUT"} <= names
    assert not {"SLUICE_POSTGRES_MAX_CONNECTIONS", "MAX_IN_FLIGHT"} & names


def test_the_derived_environment_reads_back_as_the_same_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the launcher exports (as_env) is what the app, reading it, runs with."""
    limits = Settings(environment="test", cpu_cores=3, db_connection_budget=12).limits
    for key, value in limits.as_env().items():
        monkeypatch.setenv(key, value)
    assert Settings(environment="test", cpu_cores=3, db_connection_budget=12).limits == limits


def test_an_explicit_setting_overrides_the_derived_limit() -> None:
    settings = Settings(environment="test", cpu_cores=2, queue_length=3, nginx_burst_per_client=9)
    assert (settings.limits.queue_length, settings.limits.nginx_burst_per_client) == (3, 9)


@pytest.mark.parametrize(
    "name",
    [
        "SLUICE_MAX_IN_FLIGHT",
        "PGBOUNCER_MAX_CLIENT_CONN",  # read by the app and PgBouncer's template
        "SLUICE_STATE_DIR",  # the launcher's own
        "SLUICE_PID_NGINX",  # written to stack.env, which users source
        "SLUICE_METRICS_URL",
    ],
)
def test_known_names_are_accepted(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "1000" if "CLIENT_CONN" in name else "4" if "MAX" in name else "x")
    Settings(environment="test")


def test_the_deployments_retry_after_is_the_settings_default() -> None:
    # deploy/defaults.env feeds nginx and the app in every shape; the code's
    # default must say the same, or a bare Settings() would disagree with nginx.
    defaults = dotenv_values(Path(__file__).resolve().parents[2] / "deploy" / "defaults.env")
    field = Settings.model_fields["retry_after_s"]
    assert defaults["SLUICE_RETRY_AFTER_S"] == str(field.default)
