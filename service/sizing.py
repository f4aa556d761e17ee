"""Derive every limit in the request path from a few inputs.

The chain (DESIGN.md) only holds if its bounds agree with each other, so they
are computed in one place. The reasoning, with Little's law, is in
docs/sizing.md; `python -m service.sizing` prints the derived values.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass


class SizingError(ValueError):
    """An inconsistent set of limits; the message names the numbers and the fix."""


@dataclass(frozen=True)
class SizingInputs:
    cpu_cores: int = 2
    db_connection_budget: int = 8
    target_latency_ms: int = 250
    request_deadline_ms: int = 5000
    service_time_ms: float = 50.0
    replicas: int = 1
    # Explicit overrides; None means "derive".
    workers: int | None = None
    max_in_flight: int | None = None
    queue_length: int | None = None


@dataclass(frozen=True)
class Sizing:
    """All derived limits. Per-worker values are marked as such."""

    workers: int
    threadpool_tokens: int  # per worker
    max_in_flight: int  # L, per worker
    queue_length: int  # Q, per worker
    queue_wait_ms: int  # T
    request_deadline_ms: int
    pool_size: int  # per worker
    max_overflow: int  # per worker
    pool_timeout_s: float
    backlog: int
    pgbouncer_default_pool_size: int
    pgbouncer_max_client_conn: int
    pgbouncer_query_wait_timeout_s: int
    pg_max_connections: int
    nginx_rate_per_client: int  # requests per second
    nginx_burst_per_client: int
    nginx_max_conns: int
    nginx_proxy_read_timeout_s: int
    replicas: int = 1

    def as_env(self) -> dict[str, str]:
        """The values as the environment variables the config files read."""
        return {
            "SLUICE_WORKERS": str(self.workers),
            "SLUICE_THREADPOOL_TOKENS": str(self.threadpool_tokens),
            "SLUICE_MAX_IN_FLIGHT": str(self.max_in_flight),
            "SLUICE_QUEUE_LENGTH": str(self.queue_length),
            "SLUICE_QUEUE_WAIT_MS": str(self.queue_wait_ms),
            "SLUICE_REQUEST_DEADLINE_MS": str(self.request_deadline_ms),
            "SLUICE_DB_POOL_SIZE": str(self.pool_size),
            "SLUICE_DB_MAX_OVERFLOW": str(self.max_overflow),
            "SLUICE_DB_POOL_TIMEOUT_S": f"{self.pool_timeout_s:g}",
            "SLUICE_BACKLOG": str(self.backlog),
            "PGBOUNCER_DEFAULT_POOL_SIZE": str(self.pgbouncer_default_pool_size),
            "PGBOUNCER_MAX_CLIENT_CONN": str(self.pgbouncer_max_client_conn),
            "PGBOUNCER_QUERY_WAIT_TIMEOUT": str(self.pgbouncer_query_wait_timeout_s),
            "POSTGRES_MAX_CONNECTIONS": str(self.pg_max_connections),
            "NGINX_RATE_PER_CLIENT": f"{self.nginx_rate_per_client}r/s",
            "NGINX_BURST_PER_CLIENT": str(self.nginx_burst_per_client),
            "NGINX_MAX_CONNS": str(self.nginx_max_conns),
            "NGINX_PROXY_READ_TIMEOUT": f"{self.nginx_proxy_read_timeout_s}s",
        }


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
    # split so that all admitted requests together never exceed it.
    max_in_flight = inputs.max_in_flight or max(1, inputs.db_connection_budget // app_processes)
    pool_size = max_in_flight
    # Overflow would only hide a leak: admission already caps checkouts at L.
    max_overflow = 0

    # Half the latency budget may be spent waiting in the admission queue.
    queue_wait_ms = max(1, inputs.target_latency_ms // 2)
    # Little's law: L slots each finishing one request per service time drain
    # L * T / S requests within T; a longer queue only holds requests that
    # would miss T anyway.
    queue_length = inputs.queue_length or max(
        1, math.floor(max_in_flight * queue_wait_ms / inputs.service_time_ms)
    )

    per_process_clients = pool_size + max_overflow
    pgbouncer_pool = max(1, min(inputs.db_connection_budget, app_processes * per_process_clients))
    pgbouncer_clients = app_processes * per_process_clients + PGBOUNCER_ADMIN_CLIENTS
    capacity_rps = app_processes * max_in_flight * 1000 / inputs.service_time_ms
    # nginx is the cheapest place to say no, and the app's refusals cost its
    # event loop CPU that admitted requests need. So nginx lets through what
    # the workers can serve (L each) plus a small margin, half of L, so that
    # a freed slot finds its next request already in the worker rather than
    # idling through the proxy hop; the admission queue absorbs what nginx
    # cannot see (one worker busier than another). Measured in
    # docs/benchmark.md ("The nginx cap").
    nginx_margin = min(queue_length, math.ceil(max_in_flight / 2))
    deadline_s = math.ceil(inputs.request_deadline_ms / 1000)

    return Sizing(
        workers=workers,
        threadpool_tokens=max_in_flight,
        max_in_flight=max_in_flight,
        queue_length=queue_length,
        queue_wait_ms=queue_wait_ms,
        request_deadline_ms=inputs.request_deadline_ms,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout_s=max(0.1, queue_wait_ms / 1000),
        backlog=max(64, workers * (max_in_flight + queue_length)),
        pgbouncer_default_pool_size=pgbouncer_pool,
        pgbouncer_max_client_conn=pgbouncer_clients,
        # Admission keeps checkouts within the server pool, so a PgBouncer wait
        # means the database is slow: give up about as soon as admission would.
        pgbouncer_query_wait_timeout_s=max(1, math.ceil(2 * queue_wait_ms / 1000)),
        pg_max_connections=pgbouncer_pool + PG_RESERVED_CONNECTIONS,
        nginx_rate_per_client=max(1, int(capacity_rps)),
        nginx_burst_per_client=max(1, int(capacity_rps / 2)),
        nginx_max_conns=app_processes * (max_in_flight + nginx_margin),
        nginx_proxy_read_timeout_s=deadline_s + 1,
        replicas=inputs.replicas,
    )


def check(limits: Sizing) -> None:
    """Refuse limits that break the chain; each message says how to fix it."""
    workers, replicas = limits.workers, limits.replicas
    pool_size, max_overflow = limits.pool_size, limits.max_overflow
    max_in_flight, threadpool_tokens = limits.max_in_flight, limits.threadpool_tokens
    pgbouncer_max_client_conn = limits.pgbouncer_max_client_conn
    pgbouncer_default_pool_size = limits.pgbouncer_default_pool_size
    pg_max_connections = limits.pg_max_connections
    problems: list[str] = []
    clients = workers * replicas * (pool_size + max_overflow)
    if clients > pgbouncer_max_client_conn:
        problems.append(
            f"workers ({workers}) x replicas ({replicas}) x (pool_size {pool_size} + "
            f"max_overflow {max_overflow}) = {clients} exceeds PgBouncer max_client_conn "
            f"({pgbouncer_max_client_conn}): lower SLUICE_DB_POOL_SIZE or SLUICE_WORKERS, "
            "or raise PGBOUNCER_MAX_CLIENT_CONN"
        )
    if pgbouncer_default_pool_size > pg_max_connections - 3:
        problems.append(
            f"PgBouncer default_pool_size ({pgbouncer_default_pool_size}) does not fit "
            f"PostgreSQL max_connections ({pg_max_connections}) minus its 3 reserved "
            "superuser slots: raise POSTGRES_MAX_CONNECTIONS or lower PGBOUNCER_DEFAULT_POOL_SIZE"
        )
    if max_in_flight > threadpool_tokens:
        problems.append(
            f"admission limit SLUICE_MAX_IN_FLIGHT ({max_in_flight}) exceeds the threadpool "
            f"({threadpool_tokens} threads): admitted requests would queue for a thread "
            "while holding nothing; set them equal"
        )
    if max_in_flight > pool_size + max_overflow:
        problems.append(
            f"admission limit SLUICE_MAX_IN_FLIGHT ({max_in_flight}) exceeds what the "
            f"SQLAlchemy pool can serve (pool_size {pool_size} + max_overflow {max_overflow}): "
            "admitted requests would wait for a connection; lower SLUICE_MAX_IN_FLIGHT "
            "or raise SLUICE_DB_POOL_SIZE"
        )
    if problems:
        raise SizingError("inconsistent limits:\n  - " + "\n  - ".join(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print Sluice's derived limits.")
    parser.add_argument("--cpu-cores", type=int, default=SizingInputs.cpu_cores)
    parser.add_argument(
        "--db-connection-budget", type=int, default=SizingInputs.db_connection_budget
    )
    parser.add_argument("--target-latency-ms", type=int, default=SizingInputs.target_latency_ms)
    parser.add_argument("--request-deadline-ms", type=int, default=SizingInputs.request_deadline_ms)
    parser.add_argument("--service-time-ms", type=float, default=SizingInputs.service_time_ms)
    parser.add_argument("--replicas", type=int, default=SizingInputs.replicas)
    parser.add_argument("--format", choices=["env", "table"], default="env")
    args = parser.parse_args(argv)
    sizing = derive(
        SizingInputs(
            cpu_cores=args.cpu_cores,
            db_connection_budget=args.db_connection_budget,
            target_latency_ms=args.target_latency_ms,
            request_deadline_ms=args.request_deadline_ms,
            service_time_ms=args.service_time_ms,
            replicas=args.replicas,
        )
    )
    if args.format == "env":
        for key, value in sizing.as_env().items():
            sys.stdout.write(f"{key}={value}\n")
    else:
        for key, value in asdict(sizing).items():
            sys.stdout.write(f"{key:32} {value}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
