"""items: one index for an owner's page, in the order the API lists it

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

`GET /items/` lists an owner's items newest first with OFFSET/LIMIT and
counts them. With separate owner_id and created_at indexes PostgreSQL fetched
and sorted every one of the owner's rows per page; (owner_id, created_at
DESC, id) serves the page in index order and the count from the index.
It replaces ix_items_owner_id, which it covers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_items_owner_created",
        "items",
        ["owner_id", sa.text("created_at DESC"), "id"],
    )
    op.drop_index("ix_items_owner_id", table_name="items")


def downgrade() -> None:
    op.create_index("ix_items_owner_id", "items", ["owner_id"])
    op.drop_index("ix_items_owner_created", table_name="items")
