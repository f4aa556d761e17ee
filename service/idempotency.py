"""Idempotency-Key handling for POST: one effect per key, enforced by PostgreSQL.

The key row is inserted in the same transaction as the effect. A concurrent
retry on any worker blocks on the primary key until the first transaction
ends, then sees its stored response; if the first one rolled back, the retry
runs the request itself.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from service.errors import IdempotencyMismatch
from service.models import IdempotencyRecord

_PENDING_STATUS = 0


def request_fingerprint(*, method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_once(
    *,
    session: Session,
    owner_id: uuid.UUID,
    key: str,
    fingerprint: str,
    effect: Callable[[], tuple[int, Any]],
) -> tuple[int, Any]:
    """Run `effect` once per (owner, key); return the first (status, body) on replays.

    The caller commits: the key and the effect land together or not at all.
    """
    inserted = session.execute(
        insert(IdempotencyRecord)
        .values(
            owner_id=owner_id,
            key=key,
            request_hash=fingerprint,
            status_code=_PENDING_STATUS,
            response_body=None,
        )
        .on_conflict_do_nothing(index_elements=["owner_id", "key"])
        .returning(IdempotencyRecord.key)
    ).first()
    if inserted is None:
        record = session.scalars(
            select(IdempotencyRecord).where(
                IdempotencyRecord.owner_id == owner_id, IdempotencyRecord.key == key
            )
        ).one()
        if record.request_hash != fingerprint:
            raise IdempotencyMismatch()
        return record.status_code, record.response_body

    status, body = effect()
    session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.owner_id == owner_id, IdempotencyRecord.key == key)
        .values(status_code=status, response_body=body)
    )
    return status, body
