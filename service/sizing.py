"""Derive every limit in the request path from a few inputs.

The chain of bounded queues (README, "Architecture") only holds if its bounds
agree with each other, so they are computed in one place. The reasoning, with
Little's law, is in docs/sizing.md; `python -m service.sizing` prints the
derived values. `SizingInputs` declares the inputs' defaults, once: the
settings object and the command line read them from there.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from service.env_names import env_name


class SizingError(ValueError):
    """An inconsistent set of limits; the message names the numbers and the fix."""


def available_cpus() -> int:
    """The CPUs this process may run on: what one app replica's workers can use.

    The affinity mask, not os.cpu_count(): under `taskset` or a cpuset (a
    container's --cpuset-cpus, Kubernetes' static CPU manager) the machine's
    count would start a worker per core the process may never run on. A CPU
    quota (`--cpus`, a Kubernetes limit) shows in neither: deployments with one
    set SLUICE_CPU_CORES (deploy/sizing.env).
    """
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class SizingInputs:
    # The one default of every input (docs/sizing.md).
    cpu_cores: int = field(default_factory=available_cpus)
    db_connection_budget: int = 8
    target_latency_ms: int = 250
    request_deadline_ms: int = 5000
    # The time a request holds a slot at capacity; on this 2-core machine 4
    # slots served about 390 rps (10 ms) once a request took one hop and two
    # statements (docs/benchmark.md), rounded up to leave room for slower ones.
    service_time_ms: float = 25.0
    # Share of a request's service time its worker spends computing (holding
    # the GIL) rather than waiting on the database.
    cpu_share: float = 0.5
    replicas: int = 1
    # Explicit overrides; None means "derive".
    workers: int | None = None
    max_in_flight: int | None = None
    queue_length: int | None = None


@dataclass(frozen=True)
class Sizing:
    """All derived limits. Per-worker values are marked as such.

    Each field is named as the setting that overrides it (service/settings.py)
    and as its environment variable by one rule (service/env_names.py).
    """

    workers: int
    # L, per worker: admission slots, threadpool threads and SQLAlchemy
    # pool_size alike, so an admitted request never waits for either.
    max_in_flight: int
    queue_length: int  # Q, per worker
    queue_wait_ms: int  # T
    standing_interval_ms: int
    request_deadline_ms: int
    db_max_overflow: int  # per worker
    db_pool_timeout_s: float
    backlog: int
    pgbouncer_default_pool_size: int
    pgbouncer_max_client_conn: int
    pgbouncer_query_wait_timeout: int  # seconds, as PgBouncer reads it
    postgres_max_connections: int
    nginx_rate_per_client: int  # requests per second (the template adds "r/s")
    nginx_burst_per_client: int
    nginx_max_conns: int  # slots + waiting room
    nginx_slots: int  # per-client limits apply beyond this many requests in progress
    nginx_max_conns_per_client: int  # per address, while saturated
    nginx_max_conns_per_address: int  # per address, always (slow bodies included)
    nginx_proxy_read_timeout: int  # seconds (the template adds "s")

    def as_env(self) -> dict[str, str]:
        """The values as the environment variables the app and the config files read."""
        return {env_name(f.name): _env_value(getattr(self, f.name)) for f in fields(self)}


def _env_value(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# Connections PostgreSQL keeps beyond PgBouncer's pool: superuser reserve,
# migrations, the exporter and an operator's psql.
PG_RESERVED_CONNECTIONS = 10
# Client connections PgBouncer keeps for the admin console and the exporter.
PGBOUNCER_ADMIN_CLIENTS = 10


def derive(inputs: SizingInputs) -> Sizing:
    """Compute every limit from the inputs (see docs/sizing.md)."""
    if inputs.cpu_cores < 1 or inputs.db_connection_budget < 1 or inputs.replicas < 1:
        raise SizingError("cpu_cores, db_connection_budget and replicas must be >= 1")
    if inputs.service_time_ms <= 0:
        raise SizingError("service_time_ms must be > 0")
    if not 0 < inputs.cpu_share <= 1:
        raise SizingError(f"cpu_share must be in (0, 1], not {inputs.cpu_share}")
    if inputs.target_latency_ms >= inputs.request_deadline_ms:
        raise SizingError(
            f"target_latency_ms ({inputs.target_latency_ms}) must be below "
            f"request_deadline_ms ({inputs.request_deadline_ms})"
        )

    # Python holds the GIL while it serialises JSON and runs the ORM, so one
    # worker per core; more workers only add memory and pool connections.
    workers = inputs.workers or inputs.cpu_cores
    app_processes = workers * inputs.replicas

    # Every admitted request may hold one server connection; the budget is
    # split so that all admitted requests together never exceed it. Within
    # that, a worker runs one request's Python at a time (the GIL): it needs
    # 1 / cpu_share requests in flight to keep its core busy while the others
    # wait on the database, and every request beyond that only waits for the
    # GIL, stretching every admitted request's latency for no throughput.
    # The SQLAlchemy pool and the threadpool are L too (Sizing.max_in_flight).
    max_in_flight = inputs.max_in_flight or max(
        1,
        min(inputs.db_connection_budget // app_processes, math.ceil(1 / inputs.cpu_share)),
    )
    # Overflow would only hide a leak: admission already caps checkouts at L.
    db_max_overflow = 0

    # Half the latency budget may be spent waiting in the admission queue.
    queue_wait_ms = max(1, inputs.target_latency_ms // 2)
    # Little's law: L slots each finishing one request per service time drain
    # L * T / S requests within T; a longer queue only holds requests that
    # would miss T anyway.
    queue_length = inputs.queue_length or max(
        1, math.floor(max_in_flight * queue_wait_ms / inputs.service_time_ms)
    )

    per_process_clients = max_in_flight + db_max_overflow
    pgbouncer_pool = max(1, min(inputs.db_connection_budget, app_processes * per_process_clients))
    pgbouncer_clients = app_processes * per_process_clients + PGBOUNCER_ADMIN_CLIENTS
    capacity_rps = app_processes * max_in_flight * 1000 / inputs.service_time_ms
    # nginx lets through the slots plus a waiting room: what the slots drain
    # within the wait budget T (Q per worker, by Little's law as above). A
    # worker accepts a connection only into a free slot
    # (service/server/gate.py), so the waiting room is the kernel's accept
    # queue, shared by every worker and costing no CPU; without it a burst
    # that found the slots busy was refused even at a quarter of the
    # machine's capacity (Erlang's loss formula; docs/benchmark.md). Beyond
    # the room nginx refuses at once, in well under a millisecond, and what
    # waits longer than the room's budget after all (a slower machine, a
    # slow database) is shed by the workers (service/admission.py,
    # SojournPolicy), so the waiting room's time bound follows the machine
    # even though its size is fixed here.
    slots = app_processes * max_in_flight
    nginx_max_conns = slots + app_processes * queue_length
    deadline_s = math.ceil(inputs.request_deadline_ms / 1000)

    return Sizing(
        workers=workers,
        max_in_flight=max_in_flight,
        queue_length=queue_length,
        queue_wait_ms=queue_wait_ms,
        # How long a queue must stand above T before it is called a backlog
        # rather than a burst (CoDel's interval).
        standing_interval_ms=4 * queue_wait_ms,
        request_deadline_ms=inputs.request_deadline_ms,
        db_max_overflow=db_max_overflow,
        db_pool_timeout_s=max(0.1, queue_wait_ms / 1000),
        # All of the waiting room may be in one replica's accept queue.
        backlog=max(64, nginx_max_conns),
        pgbouncer_default_pool_size=pgbouncer_pool,
        pgbouncer_max_client_conn=pgbouncer_clients,
        # Admission keeps checkouts within the server pool, so a PgBouncer wait
        # means the database is slow: give up about as soon as admission would.
        pgbouncer_query_wait_timeout=max(1, math.ceil(2 * queue_wait_ms / 1000)),
        postgres_max_connections=pgbouncer_pool + PG_RESERVED_CONNECTIONS,
        nginx_rate_per_client=max(1, int(capacity_rps)),
        nginx_burst_per_client=max(1, int(capacity_rps / 2)),
        nginx_max_conns=nginx_max_conns,
        # Per-client limits apply only while more requests are in progress
        # than there are slots (the stack is saturated and others wait): then
        # one client may keep every slot busy, never the waiting room too.
        nginx_slots=slots,
        nginx_max_conns_per_client=slots,
        # Always, counting requests whose body is still arriving: no address
        # holds more requests at nginx than the whole app can.
        nginx_max_conns_per_address=nginx_max_conns,
        nginx_proxy_read_timeout=deadline_s + 1,
    )


def check(limits: Sizing, *, replicas: int) -> None:
    """Refuse limits that break the chain; each message names the setting to change.

    Admission, threadpool and pool are one limit (max_in_flight), so they
    cannot disagree; what explicit overrides can still break is checked here.
    """
    workers = limits.workers
    max_in_flight, db_max_overflow = limits.max_in_flight, limits.db_max_overflow
    max_client_conn = limits.pgbouncer_max_client_conn
    default_pool_size = limits.pgbouncer_default_pool_size
    max_connections = limits.postgres_max_connections
    problems: list[str] = []
    clients = workers * replicas * (max_in_flight + db_max_overflow)
    if clients > max_client_conn:
        problems.append(
            f"workers ({workers}) x replicas ({replicas}) x (max_in_flight {max_in_flight} + "
            f"db_max_overflow {db_max_overflow}) = {clients} exceeds PgBouncer max_client_conn "
            f"({max_client_conn}): lower {env_name('db_max_overflow')}, "
            f"{env_name('max_in_flight')} or {env_name('workers')}, "
            f"or raise {env_name('pgbouncer_max_client_conn')}"
        )
    if default_pool_size > max_connections - 3:
        problems.append(
            f"PgBouncer default_pool_size ({default_pool_size}) does not fit "
            f"PostgreSQL max_connections ({max_connections}) minus its 3 reserved "
            f"superuser slots: raise {env_name('postgres_max_connections')} "
            f"or lower {env_name('pgbouncer_default_pool_size')}"
        )
    if limits.nginx_max_conns_per_client > limits.nginx_max_conns:
        problems.append(
            f"nginx's per-client cap ({limits.nginx_max_conns_per_client}) exceeds its "
            f"global cap ({limits.nginx_max_conns}): one client could hold every slot; "
            f"lower {env_name('nginx_max_conns_per_client')}"
        )
    if problems:
        raise SizingError("inconsistent limits:\n  - " + "\n  - ".join(problems))


def _default_help(declared: Field[Any]) -> str:
    if declared.default_factory is not MISSING:
        return f"default: {declared.default_factory()} here"
    return f"default: {'derived' if declared.default is None else declared.default}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print Sluice's derived limits.")
    # Every input SizingInputs declares; an option left out takes its default there.
    for declared in fields(SizingInputs):
        parser.add_argument(
            f"--{declared.name.replace('_', '-')}",
            type=float if declared.type == "float" else int,
            help=_default_help(declared),
        )
    parser.add_argument("--format", choices=["env", "table"], default="env")
    args = vars(parser.parse_args(argv))
    output = args.pop("format")
    sizing = derive(SizingInputs(**{k: v for k, v in args.items() if v is not None}))
    if output == "env":
        for key, value in sizing.as_env().items():
            sys.stdout.write(f"{key}={value}\n")
    else:
        for key, value in asdict(sizing).items():
            sys.stdout.write(f"{key:32} {value}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
