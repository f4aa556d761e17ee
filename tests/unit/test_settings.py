"""Settings read only the environment they are given, and refuse what they would ignore."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from dotenv import dotenv_values
from pydantic import ValidationError

from service.env_check import UnknownSetting
from service.settings import Settings
from service.sizing import Sizing

TEST = {"SLUICE_ENVIRONMENT": "test"}


def test_only_the_given_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_MAX_IN_FLIGHT", "7")
    monkeypatch.setenv("SLUICE_QUEUE_LENGTH", "not a number")
    settings = Settings.from_environ({**TEST, "SLUICE_WORKERS": "3"})
    assert settings.workers == 3
    assert settings.max_in_flight is None and settings.queue_length is None
    assert Settings(environment="test").max_in_flight is None


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("SLUICE_MAX_INFLIGHT", "did you mean SLUICE_MAX_IN_FLIGHT?"),
        # Every settings prefix is checked, not only SLUICE_.
        ("NGINX_MAX_CONN", "did you mean NGINX_MAX_CONNS?"),
        ("PGBOUNCER_DEFAULT_POOLSIZE", "did you mean PGBOUNCER_DEFAULT_POOL_SIZE?"),
        ("POSTGRES_MAX_CONNECTION", "did you mean POSTGRES_MAX_CONNECTIONS?"),
        # A template's own variable is suggested too.
        ("NGINX_WORKER_PROCESS", "did you mean NGINX_WORKER_PROCESSES?"),
    ],
)
def test_a_misspelt_setting_is_refused_with_the_closest_name(name: str, hint: str) -> None:
    with pytest.raises(UnknownSetting, match=re.escape(f"{name} ({hint})")):
        Settings.from_environ({**TEST, name: "3"})


def test_a_stray_url_variable_is_refused() -> None:
    # stack.env's URLs are listed one by one: no *_URL passes for being a URL.
    with pytest.raises(UnknownSetting, match=r"SLUICE_FOO_URL \("):
        Settings.from_environ({**TEST, "SLUICE_FOO_URL": "http://127.0.0.1:1"})


def test_a_name_close_to_nothing_points_at_the_example_file() -> None:
    with pytest.raises(UnknownSetting, match=r"SLUICE_ZZZZ \(see \.env\.example"):
        Settings.from_environ({**TEST, "SLUICE_ZZZZ": "1"})


def test_a_misspelt_field_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_inflight"):
        Settings(environment="test", max_inflight=3)  # type: ignore[call-arg]


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
def test_a_removed_name_is_refused_with_its_replacement(name: str, hint: str) -> None:
    with pytest.raises(UnknownSetting, match=re.escape(f"{name} ({hint})")):
        Settings.from_environ({**TEST, name: "4"})


def test_every_limit_is_a_setting_of_the_same_name() -> None:
    overrides = {f.name for f in dataclasses.fields(Sizing)}
    assert overrides <= Settings.model_fields.keys()


def test_the_environment_names_follow_one_rule() -> None:
    names = Settings.environment_names()
    assert {"SLUICE_MAX_IN_FLIGHT", "SLUICE_DB_HOST", "POSTGRES_MAX_CONNECTIONS"} <= names
    assert {"NGINX_RATE_PER_CLIENT", "PGBOUNCER_QUERY_WAIT_TIMEOUT"} <= names
    assert not {"SLUICE_POSTGRES_MAX_CONNECTIONS", "MAX_IN_FLIGHT"} & names


def test_the_derived_environment_reads_back_as_the_same_limits() -> None:
    """What the launcher exports (as_env) is what the app, reading it, runs with."""
    inputs = {"SLUICE_CPU_CORES": "3", "SLUICE_DB_CONNECTION_BUDGET": "12"}
    limits = Settings.from_environ({**TEST, **inputs}).limits
    assert Settings.from_environ({**TEST, **inputs, **limits.as_env()}).limits == limits


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
        "NGINX_WORKER_PROCESSES",  # deploy/defaults.env, read by nginx's template only
        "POSTGRES_PASSWORD",  # the postgres image's own
    ],
)
def test_known_names_are_accepted(name: str) -> None:
    value = "1000" if "CLIENT_CONN" in name else "4" if "MAX" in name else "x"
    Settings.from_environ({**TEST, name: value})


def test_the_deployments_retry_after_is_the_settings_default() -> None:
    # deploy/defaults.env feeds nginx and the app in every shape; the code's
    # default must say the same, or a bare Settings() would disagree with nginx.
    defaults = dotenv_values(Path(__file__).resolve().parents[2] / "deploy" / "defaults.env")
    field = Settings.model_fields["retry_after_s"]
    assert defaults["SLUICE_RETRY_AFTER_S"] == str(field.default)
