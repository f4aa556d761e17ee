"""Settings refuse what they would otherwise ignore."""

from __future__ import annotations

from pathlib import Path

import pytest
from dotenv import dotenv_values

from service.settings import Settings, UnknownSetting


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
    "name",
    [
        "SLUICE_MAX_IN_FLIGHT",
        "SLUICE_PGBOUNCER_MAX_CLIENT_CONN",  # an aliased field
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
