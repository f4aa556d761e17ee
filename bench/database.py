"""Direct PostgreSQL access (superuser, loopback): seeding, cleanup, the integrity check."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions

from bench.stats import Outcome
from bench.workload import TITLE_PREFIX


@contextmanager
def connect(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(dsn, connect_timeout=5, application_name="sluice-bench")
    try:
        conn.autocommit = True
        yield conn
    finally:
        conn.close()


def seed_items(dsn: str, *, emails: Sequence[str], count: int) -> int:
    """Give each of these users exactly `count` seeded items; return how many there are."""
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM users WHERE email = ANY(%s)", (list(emails),))
        owners = [row[0] for row in cur.fetchall()]
        if len(owners) != len(set(emails)):
            missing = len(set(emails)) - len(owners)
            raise RuntimeError(f"{missing} of the bench users missing: sign up first")
        cur.execute("DELETE FROM items WHERE owner_id = ANY(%s::uuid[])", (owners,))
        cur.execute(
            """
            INSERT INTO items (id, title, description, owner_id, created_at, updated_at)
            SELECT gen_random_uuid(), 'seed-' || g, 'seeded by sluice bench', owner,
                   now() - g * interval '1 second', now()
            FROM unnest(%s::uuid[]) AS owner, generate_series(1, %s) AS g
            """,
            (owners, count),
        )
        cur.execute("VACUUM ANALYZE items")
        # Write the seed's dirty pages now: otherwise the checkpoint that
        # follows 200,000 inserts lands in the first deployment's runs, and its
        # disk writes stall that deployment's commits (100-400 ms) and not the
        # next one's.
        cur.execute("CHECKPOINT")
        cur.execute("SELECT count(*) FROM items WHERE owner_id = ANY(%s::uuid[])", (owners,))
        return int(cur.fetchone()[0])  # type: ignore[index]


def bench_titles(dsn: str, run_id: str) -> Counter[str]:
    """Titles of the rows this run created, with how many rows carry each."""
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT title, count(*) FROM items WHERE title LIKE %s GROUP BY title",
            (f"{TITLE_PREFIX}{run_id}-%",),
        )
        return Counter({title: int(n) for title, n in cur.fetchall()})


def row_count(dsn: str) -> int:
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM items")
        return int(cur.fetchone()[0])  # type: ignore[index]


def delete_bench_rows(dsn: str) -> int:
    """Remove every row the benchmark created, so each run reads the same 10,000 items."""
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM items WHERE title LIKE %s", (f"{TITLE_PREFIX}%",))
        deleted = cur.rowcount
        cur.execute("VACUUM ANALYZE items")
        return deleted


@dataclass(frozen=True)
class Integrity:
    acknowledged: int  # POSTs answered 2xx
    acknowledged_missing: int  # ... whose row is not there: lost writes
    unacknowledged: int  # POSTs answered otherwise, or not at all
    committed_after_timeout: int  # ... whose row exists although the client timed out
    committed_after_rejection: int  # ... whose row exists although it was answered 429/503
    committed_after_other: int  # ... other errors (5xx, connection errors)
    duplicates: int  # extra rows for one title
    unknown: int  # rows with this run's prefix that no request sent

    @property
    def committed_unacknowledged(self) -> int:
        return (
            self.committed_after_timeout
            + self.committed_after_rejection
            + self.committed_after_other
        )


def check_integrity(outcomes: Iterable[Outcome], found: Mapping[str, int]) -> Integrity:
    """Compare what the client was told with what PostgreSQL holds. Pure."""
    acked: set[str] = set()
    timeouts: set[str] = set()
    rejected: set[str] = set()
    other: set[str] = set()
    for o in outcomes:
        if not o.tag:
            continue
        if o.ok:
            acked.add(o.tag)
        elif o.error == "timeout":
            timeouts.add(o.tag)
        elif o.status in (429, 503):
            rejected.add(o.tag)
        else:
            other.add(o.tag)  # includes not_sent: such a row would be a bug of ours
    sent = acked | timeouts | rejected | other
    return Integrity(
        acknowledged=len(acked),
        acknowledged_missing=sum(1 for t in acked if t not in found),
        unacknowledged=len(timeouts | rejected | other),
        committed_after_timeout=sum(1 for t in timeouts if t in found),
        committed_after_rejection=sum(1 for t in rejected if t in found),
        committed_after_other=sum(1 for t in other if t in found),
        duplicates=sum(n - 1 for n in found.values() if n > 1),
        unknown=sum(1 for t in found if t not in sent),
    )
