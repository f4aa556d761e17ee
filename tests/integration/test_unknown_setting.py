"""A misspelt setting stops the real processes before they start anything."""

from __future__ import annotations

import os

from tests.stackctl import PORT_SHIFT, ROOT, launcher, run_gunicorn

TYPO = {"SLUICE_MAX_INFLIGHT": "99"}
HINT = "SLUICE_MAX_INFLIGHT (did you mean SLUICE_MAX_IN_FLIGHT?)"


def test_gunicorn_refuses_a_misspelt_setting() -> None:
    env = dict(os.environ, SLUICE_BIND_PORT=str(24691 + PORT_SHIFT), **TYPO)
    result = run_gunicorn(env)
    assert result.returncode != 0
    assert HINT in result.stderr, result.stderr


def test_launcher_refuses_a_misspelt_setting() -> None:
    env = dict(
        os.environ,
        SLUICE_STATE_DIR=str(ROOT / f".sluice-test-typo-{PORT_SHIFT}"),
        SLUICE_PORT_BASE=str(24620 + PORT_SHIFT),
        **TYPO,
    )
    result = launcher("up", env)
    assert result.returncode != 0
    assert HINT in result.stderr, result.stderr
    assert "not running" in launcher("status", env).stdout
