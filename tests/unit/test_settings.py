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


# --------------------------------------------------------------------------
# Mail and the first superuser: the template's names, bare


def test_mail_and_superuser_settings_keep_the_templates_names() -> None:
    env = {
        "SLUICE_ENVIRONMENT": "test",
        "SMTP_HOST": "mail.example.com",
        "SMTP_PORT": "465",
        "SMTP_TLS": "false",
        "SMTP_SSL": "true",
        "SMTP_USER": "relay",
        "SMTP_PASSWORD": "relay-pw",
        "EMAILS_FROM_EMAIL": "noreply@example.com",
        "FIRST_SUPERUSER": "admin@example.com",
        "FIRST_SUPERUSER_PASSWORD": "first-pw-123",
    }
    settings = Settings.from_environ(env)
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_ssl) == (
        "mail.example.com",
        465,
        True,
    )
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "relay-pw"
    assert settings.first_superuser == "admin@example.com"


def test_mail_and_superuser_secrets_can_be_files(tmp_path: Path) -> None:
    (tmp_path / "smtp_password").write_text("from-a-file")
    (tmp_path / "first_superuser_password").write_text("also-from-a-file")
    settings = Settings.from_environ(
        {"SLUICE_ENVIRONMENT": "test", "FIRST_SUPERUSER": "admin@example.com"},
        secrets_dir=tmp_path,
    )
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "from-a-file"
    assert settings.first_superuser_password is not None
    assert settings.first_superuser_password.get_secret_value() == "also-from-a-file"


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("SMTP_HSOT", "did you mean SMTP_HOST?"),
        ("EMAILS_FROM", "did you mean EMAILS_FROM_NAME?"),
        ("FIRST_SUPERUSER_PASS", "did you mean FIRST_SUPERUSER_PASSWORD?"),
    ],
)
def test_a_misspelt_mail_setting_is_refused(name: str, hint: str) -> None:
    with pytest.raises(UnknownSetting, match=re.escape(f"{name} ({hint})")):
        Settings.from_environ({"SLUICE_ENVIRONMENT": "test", name: "x"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"smtp_tls": True, "smtp_ssl": True}, "exclude each other"),
        ({"smtp_host": "mail.example.com"}, "EMAILS_FROM_EMAIL is not"),
        ({"first_superuser": "a@example.com"}, "FIRST_SUPERUSER_PASSWORD is not"),
        (
            {"first_superuser": "a@example.com", "first_superuser_password": "short"},
            "at least 8",
        ),
        ({"max_in_flight": 2, "password_hash_concurrency": 2}, "SLUICE_PASSWORD_HASH_CONCURRENCY"),
        ({"max_in_flight": 3, "mail_concurrency": 3}, "SLUICE_MAIL_CONCURRENCY"),
    ],
)
def test_incomplete_or_contradictory_mail_settings_are_refused(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(environment="test", **fields)  # type: ignore[arg-type]


def test_a_default_superuser_password_is_refused_outside_development() -> None:
    secure = {"secret_key": "k" * 40, "db_password": "a-real-db-password"}
    with pytest.raises(ValueError, match="FIRST_SUPERUSER_PASSWORD is a default"):
        Settings(
            environment="staging",
            first_superuser="admin@example.com",
            first_superuser_password="changethis",
            **secure,  # type: ignore[arg-type]
        )


def test_a_mail_setting_with_the_sluice_prefix_is_refused() -> None:
    with pytest.raises(UnknownSetting, match="SLUICE_SMTP_HOST"):
        Settings.from_environ({"SLUICE_SMTP_HOST": "mail.example.com"})


def test_empty_mail_variables_mean_unset() -> None:
    # As compose's ${VAR:-} passes "not set".
    empty = dict.fromkeys(("SMTP_HOST", "EMAILS_FROM_EMAIL", "FIRST_SUPERUSER"), "")
    settings = Settings.from_environ({"SLUICE_ENVIRONMENT": "test", **empty})
    assert settings.smtp_host is None and settings.first_superuser is None
