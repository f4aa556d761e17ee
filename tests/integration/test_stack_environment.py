"""A stack is configured by the environment it is given, and publishes only known names."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.layout import Layout
from deploy.stack import Stack
from service.env_check import LAUNCHER, PUBLISHED, TEMPLATE_ONLY
from service.settings import Settings
from service.sizing import SizingInputs, derive
from tests.stackctl import RunningStack, clean_environ


def test_a_limit_in_the_shell_does_not_reach_a_stack_given_another_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SLUICE_MAX_IN_FLIGHT", "7")
    monkeypatch.setenv("NGINX_MAX_CONNS", "99")
    layout = Layout(state=tmp_path / "state", port_base=1000)
    environ = clean_environ(SLUICE_ENVIRONMENT="test", SLUICE_CPU_CORES="2")
    # Everything the stack's processes get: no process is started for this.
    env = Stack(layout, environ=environ).environment
    derived = derive(SizingInputs(cpu_cores=2))
    assert env["SLUICE_MAX_IN_FLIGHT"] == str(derived.max_in_flight) != "7"
    assert env["NGINX_MAX_CONNS"] == str(derived.nginx_max_conns) != "99"
    assert Settings.from_environ(env).limits == derived


def test_a_limit_the_stack_is_given_is_what_it_runs_with(tmp_path: Path) -> None:
    layout = Layout(state=tmp_path / "state", port_base=1000)
    environ = clean_environ(SLUICE_ENVIRONMENT="test", SLUICE_MAX_IN_FLIGHT="3")
    env = Stack(layout, environ=environ).environment
    assert env["SLUICE_MAX_IN_FLIGHT"] == "3"
    # nginx lets through the workers' slots and the waiting room they drain.
    assert int(env["NGINX_SLOTS"]) == 3 * int(env["SLUICE_WORKERS"])
    slots_and_room = int(env["SLUICE_WORKERS"]) * (3 + int(env["SLUICE_QUEUE_LENGTH"]))
    assert int(env["NGINX_MAX_CONNS"]) == slots_and_room


def test_stack_env_publishes_only_names_the_settings_check_knows(stack: RunningStack) -> None:
    """stack.env is sourced by users: each of its names must pass the check, and be listed."""
    published = stack.env
    Settings.from_environ(published)
    own = set(published) - Settings.environment_names() - TEMPLATE_ONLY
    assert own == PUBLISHED | LAUNCHER
