"""Engine, pool instrumentation, and what each statement carries: its time limit.

Round trips are the cost that matters here: every statement crosses PgBouncer
and costs CPU in the worker, PgBouncer and PostgreSQL on the same cores. So:

- A read-only request (GET, HEAD; `READ_ONLY_KEY`) runs its statements in
  autocommit: no BEGIN, no ROLLBACK (READ COMMITTED gives every statement
  its own snapshot inside a transaction too, so nothing is lost).
- The request's remaining deadline travels with each statement instead of as
  a statement of its own: `SET LOCAL statement_timeout = <ms>; <statement>`
  in one message. PostgreSQL runs a multi-statement message as one implicit
  transaction, so SET LOCAL holds for exactly that statement, and under
  PgBouncer's transaction pooling it can never leak to another client. In a
  write transaction it rides on the transaction's first statement.
- No ping per checkout. A connection idle for longer than
  `PING_AFTER_IDLE_S` is pinged before use (a dead one is replaced, at no cost
  to the request); one that died between two busy uses fails its statement,
  which is a 503 db_unavailable (retry once; never a 500), and SQLAlchemy
  then replaces every connection older than the failure.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine.interfaces import DBAPIConnection, ExecutionContext
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.session import SessionTransaction
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, QueuePool

from service import metrics
from service.errors import DeadlineExceeded
from service.settings import Settings

# Session.info keys: the request's deadline (time.monotonic() seconds), and
# whether the request only reads (its statements then run in autocommit).
DEADLINE_KEY = "deadline"
READ_ONLY_KEY = "read_only"
# Connection.info keys: the deadline of the session using the connection, and
# whether the next statement opens a write transaction (gets the timeout).
_CONN_DEADLINE = "sluice_deadline"
_CONN_FIRST = "sluice_first_statement"
_CONN_AUTOCOMMIT = "sluice_autocommit"
# Pool entry info: when the connection was last given back.
_LAST_CHECKIN = "sluice_last_checkin"
# Under load a connection is reused within milliseconds and never pinged; one
# that sat idle this long may have been cut (a PgBouncer or server restart,
# an idle timeout on the way).
PING_AFTER_IDLE_S = 5.0


def create_db_engine(settings: Settings) -> Engine:
    limits = settings.limits
    engine = create_engine(
        settings.database_url,
        poolclass=InstrumentedQueuePool,
        # One connection per admitted request (Sizing.max_in_flight).
        pool_size=limits.max_in_flight,
        max_overflow=limits.db_max_overflow,
        pool_timeout=limits.db_pool_timeout_s,
        pool_pre_ping=False,  # see PING_AFTER_IDLE_S
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 2,
            "application_name": "sluice",
            # TCP keepalives so a vanished server does not hang a statement.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        },
    )
    _instrument_pool(engine)
    event.listen(engine, "before_cursor_execute", _with_statement_timeout, retval=True)
    return engine


def create_session_factory(bind: Engine | Connection, **options: Any) -> sessionmaker[Session]:
    factory = sessionmaker(bind=bind, expire_on_commit=False, autoflush=True, **options)
    event.listen(factory, "after_begin", _carry_deadline)
    return factory


def _carry_deadline(session: Session, transaction: SessionTransaction, connection: Any) -> None:
    """Give the connection the request's deadline and mode, before its first statement.

    A read-only request's connection is switched to autocommit on the client
    side (psycopg2 then sends no BEGIN; no SQL is sent to switch), and back
    when it returns to the pool. SQLAlchemy's isolation_level option would
    reset with a `SET default_transaction_isolation` round trip instead.
    """
    info = connection.info
    # Only a connection of the session's own (bound to an engine): one handed
    # in already inside a transaction (the tests' outer one) keeps it.
    if session.info.get(READ_ONLY_KEY) and isinstance(session.bind, Engine):
        connection.connection.dbapi_connection.autocommit = True
        info[_CONN_AUTOCOMMIT] = True
    deadline = session.info.get(DEADLINE_KEY)
    if deadline is None:
        return
    if deadline <= time.monotonic():
        raise DeadlineExceeded()
    info[_CONN_DEADLINE] = deadline
    info[_CONN_FIRST] = True


def _with_statement_timeout(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: ExecutionContext | None,
    executemany: bool,
) -> tuple[str, Any]:
    """Prefix `SET LOCAL statement_timeout` to what opens a transaction, in the same message.

    In autocommit every statement is its own transaction; otherwise the
    first statement after BEGIN is (psycopg2 sends BEGIN itself).
    """
    info = conn.info
    deadline = info.get(_CONN_DEADLINE)
    if deadline is None or executemany:
        return statement, parameters
    if not info.get(_CONN_AUTOCOMMIT):
        if not info.get(_CONN_FIRST):
            return statement, parameters
        info[_CONN_FIRST] = False
    remaining_ms = int((deadline - time.monotonic()) * 1000)
    if remaining_ms <= 0:
        raise DeadlineExceeded()
    return f"SET LOCAL statement_timeout = {remaining_ms}; {statement}", parameters


def _instrument_pool(engine: Engine) -> None:
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    metrics.DB_POOL_SIZE.set(pool.size())

    @event.listens_for(engine, "checkout")
    def _on_checkout(
        dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        last = record.info.get(_LAST_CHECKIN)
        if last is not None and time.monotonic() - last > PING_AFTER_IDLE_S:
            _ping(dbapi_connection)
        metrics.DB_POOL_CHECKED_OUT.inc()
        metrics.DB_POOL_OVERFLOW.set(max(0, pool.overflow()))

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        record.info[_LAST_CHECKIN] = time.monotonic()
        metrics.DB_POOL_CHECKED_OUT.dec()

    @event.listens_for(engine, "reset")
    def _forget_the_request(
        dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, state: Any
    ) -> None:
        if record.info.pop(_CONN_AUTOCOMMIT, False):
            dbapi_connection.autocommit = False
        for key in (_CONN_DEADLINE, _CONN_FIRST):
            record.info.pop(key, None)


def _ping(dbapi_connection: DBAPIConnection) -> None:
    """A dead idle connection raises DisconnectionError: the pool replaces it and tries again."""
    try:
        # In autocommit for the ping: one round trip, not BEGIN, SELECT, ROLLBACK.
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
            dbapi_connection.autocommit = False
    except Exception as exc:
        raise sa_exc.DisconnectionError("idle connection is gone") from exc


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
