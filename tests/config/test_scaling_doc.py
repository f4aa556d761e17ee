"""docs/scaling.md quotes the sizing module: its table is regenerated and compared."""

from __future__ import annotations

from service.sizing import SizingInputs, derive
from tests.config.deployment import ROOT

HEADER = (
    "| replicas | Gunicorn workers | L per worker (= pool) | queue per worker "
    "| app→PgBouncer clients | PgBouncer server conns | PostgreSQL max_connections "
    "| capacity estimate (req/s) |"
)


def scaling_table(cpu_cores: int = 2, budget: int = 40) -> str:
    rows = [HEADER, "|" + "---|" * 8]
    for replicas in (1, 2, 3, 4, 6, 8):
        s = derive(
            SizingInputs(cpu_cores=cpu_cores, db_connection_budget=budget, replicas=replicas)
        )
        processes = s.workers * replicas
        rows.append(
            f"| {replicas} | {processes} | {s.max_in_flight} | {s.queue_length} "
            f"| {processes * (s.max_in_flight + s.db_max_overflow)} "
            f"| {s.pgbouncer_default_pool_size} "
            f"| {s.postgres_max_connections} | {s.nginx_rate_per_client} |"
        )
    return "\n".join(rows)


def test_scaling_doc_table_is_what_the_sizing_module_derives() -> None:
    doc = (ROOT / "docs" / "scaling.md").read_text()
    assert scaling_table() in doc, "regenerate the table: python -m tests.config.test_scaling_doc"


if __name__ == "__main__":
    print(scaling_table())
