"""The sizing module and the start-up check that refuses inconsistent limits."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from service.settings import Settings
from service.sizing import SizingError, SizingInputs, derive
from service.sizing import main as sizing_main


@pytest.mark.parametrize("cores", [1, 2, 8])
@pytest.mark.parametrize("budget", [4, 8, 40])
@pytest.mark.parametrize("replicas", [1, 3])
def test_derived_limits_always_hold_the_chain(cores: int, budget: int, replicas: int) -> None:
    s = derive(SizingInputs(cpu_cores=cores, db_connection_budget=budget, replicas=replicas))
    processes = s.workers * replicas
    assert processes * (s.max_in_flight + s.db_max_overflow) <= s.pgbouncer_max_client_conn
    assert s.pgbouncer_default_pool_size <= s.postgres_max_connections - 3
    assert s.queue_wait_ms < s.request_deadline_ms
    assert s.nginx_proxy_read_timeout * 1000 > s.request_deadline_ms
    # nginx lets every slot be filled and the waiting room behind them; the
    # kernel's accept queue must hold all of that room.
    assert s.nginx_slots == processes * s.max_in_flight
    assert s.nginx_max_conns == s.nginx_slots + processes * s.queue_length
    assert s.backlog >= s.nginx_max_conns - s.nginx_slots
    assert 1 <= s.nginx_max_conns_per_client <= s.nginx_max_conns


def test_in_flight_is_what_a_worker_can_use_within_the_connection_budget() -> None:
    # A worker computes one request at a time (the GIL): with half of a
    # request spent on the CPU, two in flight keep its core busy.
    s = derive(SizingInputs(cpu_cores=2, db_connection_budget=8))
    assert (s.workers, s.max_in_flight, s.queue_length) == (2, 2, 10)
    assert s.pgbouncer_default_pool_size == 4  # the budget is a ceiling, not a target
    # Mostly waiting on the database: more in flight, up to the budget's share.
    waiting = derive(SizingInputs(cpu_cores=2, db_connection_budget=8, cpu_share=0.1))
    assert waiting.max_in_flight == 4
    roomy = derive(SizingInputs(cpu_cores=2, db_connection_budget=40, cpu_share=0.1))
    assert roomy.max_in_flight == 10


def test_nginx_lets_through_the_slots_and_a_waiting_room_that_drains_within_t() -> None:
    # 2 workers x L 2 = 4 slots; each worker's slots drain Q = 2 x 125 / 25 = 10
    # requests within T, so 20 may wait in the accept queue: nginx admits 24
    # and refuses the rest itself (docs/sizing.md).
    s = derive(SizingInputs(cpu_cores=2, db_connection_budget=8))
    assert (s.nginx_slots, s.nginx_max_conns) == (4, 24)
    # While saturated, one client may keep every slot busy but not the room too.
    assert s.nginx_max_conns_per_client == 4
    # Across replicas: every replica's slots and room.
    three = derive(SizingInputs(cpu_cores=2, db_connection_budget=40, replicas=3))
    assert three.nginx_max_conns == 3 * three.workers * (three.max_in_flight + three.queue_length)


def test_cpu_share_outside_its_range_is_refused() -> None:
    with pytest.raises(SizingError, match="cpu_share"):
        derive(SizingInputs(cpu_share=0))
    with pytest.raises(ValidationError):
        Settings(cpu_share=1.5, environment="test")


def test_littles_law_bounds_the_queue() -> None:
    s = derive(
        SizingInputs(db_connection_budget=8, cpu_cores=2, service_time_ms=5, target_latency_ms=200)
    )
    # 2 slots x 100 ms wait / 5 ms per request = 40 requests drain within T.
    assert (s.max_in_flight, s.queue_wait_ms, s.queue_length) == (2, 100, 40)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(SizingError, match="target_latency_ms"):
        derive(SizingInputs(target_latency_ms=6000, request_deadline_ms=5000))


def test_startup_check_names_the_conflicting_numbers() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(cpu_cores=2, db_max_overflow=50, environment="test")
    message = str(info.value)
    assert "workers (2) x replicas (1) x (max_in_flight 2 + db_max_overflow 50)" in message
    assert "PgBouncer max_client_conn" in message
    assert "SLUICE_DB_MAX_OVERFLOW" in message and "PGBOUNCER_MAX_CLIENT_CONN" in message


def test_startup_check_refuses_a_pgbouncer_pool_postgresql_cannot_hold() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(cpu_cores=2, postgres_max_connections=5, environment="test")
    message = str(info.value)
    assert "default_pool_size (4)" in message
    assert "POSTGRES_MAX_CONNECTIONS" in message and "PGBOUNCER_DEFAULT_POOL_SIZE" in message


def test_startup_check_refuses_a_per_client_cap_above_the_global_one() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(cpu_cores=2, nginx_max_conns=1, environment="test")
    message = str(info.value)
    assert "per-client cap (4) exceeds its global cap (1)" in message
    assert "NGINX_MAX_CONNS_PER_CLIENT" in message


def test_a_larger_admission_limit_moves_the_pools_with_it() -> None:
    """One limit: more admission slots are more pool connections and PgBouncer clients."""
    s = Settings(cpu_cores=2, max_in_flight=50, environment="test").limits
    assert s.max_in_flight == 50
    assert s.pgbouncer_max_client_conn >= s.workers * (50 + s.db_max_overflow)


def test_production_refuses_default_secrets() -> None:
    with pytest.raises(ValidationError, match="SLUICE_SECRET_KEY"):
        Settings(environment="production", db_password="a-very-strong-password-1")
    with pytest.raises(ValidationError, match="SLUICE_SECRET_KEY"):
        Settings(environment="production", secret_key="short", db_password="strong-pw-123456")
    with pytest.raises(ValidationError, match="SLUICE_DB_PASSWORD"):
        Settings(environment="staging", secret_key="x" * 48, db_password="changethis")
    ok = Settings(environment="production", secret_key="x" * 48, db_password="strong-pw-123456")
    assert ok.environment == "production"


def test_each_input_has_one_default_the_settings_read() -> None:
    settings, inputs = Settings(), SizingInputs()
    for declared in dataclasses.fields(SizingInputs):
        assert getattr(settings, declared.name) == getattr(inputs, declared.name), declared.name


def test_the_command_line_defaults_are_the_inputs_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sizing_main([]) == 0
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert printed == derive(SizingInputs()).as_env()


def test_cores_default_to_the_cpus_the_process_may_run_on() -> None:
    """Under taskset (or a cpuset) a worker per machine core would share one core."""
    one_cpu = sorted(os.sched_getaffinity(0))[:1]
    result = subprocess.run(
        [sys.executable, "-m", "service.sizing"],
        preexec_fn=lambda: os.sched_setaffinity(0, one_cpu),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "SLUICE_WORKERS=1\n" in result.stdout
