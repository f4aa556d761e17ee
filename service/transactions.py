"""Committing a request's writes, and saying honestly when the outcome is unknown.

A 503 from Sluice promises that the write was not applied, so a client may
retry it. That holds for every failure up to COMMIT: the transaction dies
with its connection. It does not hold for COMMIT itself: when the connection
is lost after COMMIT was sent, PostgreSQL may have committed and only the
answer was lost. That case gets its own reason (`commit_outcome_unknown`):
retry with the same Idempotency-Key, which is safe either way.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from service.error_handlers import classify_db_error
from service.errors import CommitOutcomeUnknown, DatabaseUnavailable


def commit(session: Session) -> None:
    # Flushed first, so a failure here still means "not applied".
    session.flush()
    try:
        session.commit()
    except sa_exc.SQLAlchemyError as exc:
        if isinstance(classify_db_error(exc), DatabaseUnavailable):
            raise CommitOutcomeUnknown() from exc
        raise
