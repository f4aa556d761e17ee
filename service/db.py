"""Engine, pool instrumentation and the per-transaction statement timeout."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.session import SessionTransaction
from sqlalchemy.pool import QueuePool

from service import metrics
from service.errors import DeadlineExceeded
from service.settings import Settings

# Session.info key holding the request's deadline (time.monotonic() seconds).
DEADLINE_KEY = "deadline"


def create_db_engine(settings: Settings) -> Engine:
    limits = settings.limits
    engine = create_engine(
        settings.database_url,
        poolclass=InstrumentedQueuePool,
        # One connection per admitted request (Sizing.max_in_flight).
        pool_size=limits.max_in_flight,
        max_overflow=limits.db_max_overflow,
        pool_timeout=limits.db_pool_timeout_s,
        # A server lost behind PgBouncer is noticed at checkout, not mid-request.
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 2,
            "application_name": "sluice",
            # TCP keepalives so a vanished server does not hang a checkout.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        },
    )
    _instrument_pool(engine)
    return engine


def create_session_factory(bind: Engine | Connection, **options: Any) -> sessionmaker[Session]:
    factory = sessionmaker(bind=bind, expire_on_commit=False, autoflush=True, **options)
    event.listen(factory, "after_begin", _apply_statement_timeout)
    return factory


def _apply_statement_timeout(
    session: Session, transaction: SessionTransaction, connection: Any
) -> None:
    """Bound every transaction by what is left of the request's deadline.

    SET LOCAL lasts until the transaction ends, so it is safe under PgBouncer's
    transaction pooling: it never leaks to another client's transaction.
    """
    deadline = session.info.get(DEADLINE_KEY)
    if deadline is None:
        return
    remaining_ms = int((deadline - time.monotonic()) * 1000)
    if remaining_ms <= 0:
        raise DeadlineExceeded()
    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {remaining_ms}")


def _instrument_pool(engine: Engine) -> None:
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    metrics.DB_POOL_SIZE.set(pool.size())

    @event.listens_for(engine, "checkout")
    def _on_checkout(*_: Any) -> None:
        metrics.DB_POOL_CHECKED_OUT.inc()
        metrics.DB_POOL_OVERFLOW.set(max(0, pool.overflow()))

    @event.listens_for(engine, "checkin")
    def _on_checkin(*_: Any) -> None:
        metrics.DB_POOL_CHECKED_OUT.dec()


class DatabaseLiveness:
    """When a statement last succeeded on this engine: readiness without a pooled connection.

    Under load every pooled connection is busy, so a readiness probe that had
    to check one out would wait, time out and call a busy process unready.
    Statements that keep succeeding already prove the database answers.
    """

    def __init__(self, engine: Engine) -> None:
        self.last_success: float | None = None
        event.listen(engine, "after_cursor_execute", self._succeeded)

    def _succeeded(self, *_: Any) -> None:
        self.last_success = time.monotonic()

    def answered_within(self, seconds: float) -> bool:
        last = self.last_success
        return last is not None and time.monotonic() - last < seconds


class InstrumentedQueuePool(QueuePool):
    """A QueuePool that reports its waiters, checkout wait times and timeouts.

    SQLAlchemy has no event for "a checkout starts waiting", so the one method
    that waits is wrapped.
    """

    def _do_get(self) -> Any:
        metrics.DB_POOL_WAITERS.inc()
        start = time.perf_counter()
        try:
            return super()._do_get()
        except sa_exc.TimeoutError:
            metrics.DB_POOL_TIMEOUTS.inc()
            raise
        finally:
            metrics.DB_POOL_WAITERS.dec()
            metrics.DB_CHECKOUT_WAIT.observe(time.perf_counter() - start)
