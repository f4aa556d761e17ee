"""users.item_count, kept by PostgreSQL: a page's total without counting the owner's rows

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

`GET /items/` answers `{"data": [...], "count": n}`. Counting an owner's items
per request read every one of their index entries (10,000 in the benchmark),
on every page. The count now lives on the owner's row, which the request loads
anyway to authenticate, and statement-level triggers with transition tables
keep it exact for every insert, delete or change of owner, including bulk SQL
that bypasses the app: one UPDATE per statement and owner, in the same
transaction, no round trip of the app's.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTIONS = """
CREATE FUNCTION sluice_items_counted_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET item_count = users.item_count + added.n
    FROM (SELECT owner_id, count(*) AS n FROM new_items GROUP BY owner_id) AS added
    WHERE users.id = added.owner_id;
    RETURN NULL;
END $$;

CREATE FUNCTION sluice_items_counted_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET item_count = users.item_count - removed.n
    FROM (SELECT owner_id, count(*) AS n FROM old_items GROUP BY owner_id) AS removed
    WHERE users.id = removed.owner_id;
    RETURN NULL;
END $$;

CREATE FUNCTION sluice_items_counted_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET item_count = users.item_count + delta.n
    FROM (
        SELECT owner_id, sum(n) AS n FROM (
            SELECT owner_id, count(*) AS n FROM new_items GROUP BY owner_id
            UNION ALL
            SELECT owner_id, -count(*) AS n FROM old_items GROUP BY owner_id
        ) AS moves GROUP BY owner_id
    ) AS delta
    WHERE users.id = delta.owner_id AND delta.n <> 0;
    RETURN NULL;
END $$;
"""

_TRIGGERS = """
CREATE TRIGGER items_counted_in AFTER INSERT ON items
    REFERENCING NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION sluice_items_counted_in();
CREATE TRIGGER items_counted_out AFTER DELETE ON items
    REFERENCING OLD TABLE AS old_items
    FOR EACH STATEMENT EXECUTE FUNCTION sluice_items_counted_out();
CREATE TRIGGER items_counted_moved AFTER UPDATE ON items
    REFERENCING OLD TABLE AS old_items NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION sluice_items_counted_moved();
"""


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("item_count", sa.Integer(), nullable=False, server_default="0"),
    )
    op.execute(_FUNCTIONS)
    # The lock keeps rows from arriving between the count and the triggers.
    op.execute("LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE")
    op.execute(_TRIGGERS)
    op.execute(
        "UPDATE users SET item_count = counted.n "
        "FROM (SELECT owner_id, count(*) AS n FROM items GROUP BY owner_id) AS counted "
        "WHERE users.id = counted.owner_id"
    )


def downgrade() -> None:
    for trigger in ("items_counted_in", "items_counted_out", "items_counted_moved"):
        op.execute(f"DROP TRIGGER {trigger} ON items")
    for function in ("in", "out", "moved"):
        op.execute(f"DROP FUNCTION sluice_items_counted_{function}()")
    op.drop_column("users", "item_count")
