"""The one place exceptions become JSON responses: `{"detail", "reason"}`.

Database failures that mean "not now" (pool timeout, PgBouncer wait timeout,
a lost server, statement timeout) become 503 + Retry-After; nothing becomes a
bare 500 or leaks a stack trace or SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import metrics
from service.errors import (
    DatabaseUnavailable,
    Overloaded,
    PgBouncerWaitTimeout,
    PoolTimeout,
    SluiceError,
    StatementTimeout,
)

log = logging.getLogger("sluice.errors")

# psycopg2 pgcodes and PgBouncer messages that mean "try again later".
_QUERY_CANCELED = "57014"
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P")
_PGBOUNCER_TRANSIENT = (
    "query_wait_timeout",
    "no more connections allowed",
    "server conn crashed",
    "pgbouncer cannot connect to server",
    "server login retry",
    "client_login_timeout",
    "database is shutting down",
    "server closed the connection unexpectedly",
    "connection refused",
    "could not connect to server",
    "connection to server at",
    "terminating connection",
    "the database system is",
)


def error_response(
    error: SluiceError, *, retry_after_s: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Every refusal and error the app answers: `{"detail", "reason"}`, Retry-After if retryable.

    An ASGI app too, so the middlewares (admission, the probe port) send it as it is.
    """
    merged = {**(headers or {}), **error.headers()}
    if error.retryable:
        merged["Retry-After"] = str(retry_after_s)
    return JSONResponse(
        {"detail": error.detail, "reason": error.reason},
        status_code=error.status_code,
        headers=merged,
    )


def classify_db_error(exc: sa_exc.SQLAlchemyError) -> Overloaded | None:
    """Map a database exception to a 503 class, or None if it is a real bug."""
    if isinstance(exc, sa_exc.TimeoutError):
        return PoolTimeout()
    orig = getattr(exc, "orig", None)
    pgcode = getattr(orig, "pgcode", None) or ""
    message = str(orig or exc).lower()
    if pgcode == _QUERY_CANCELED:
        return StatementTimeout()
    if "query_wait_timeout" in message:
        return PgBouncerWaitTimeout()
    if (
        (isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated)
        or pgcode.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
        or any(marker in message for marker in _PGBOUNCER_TRANSIENT)
        or (isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) and not pgcode)
    ):
        return DatabaseUnavailable()
    return None


def install(app: FastAPI, *, retry_after_s: int) -> None:
    @app.exception_handler(SluiceError)
    async def _sluice_error(request: Request, exc: SluiceError) -> JSONResponse:
        if isinstance(exc, Overloaded):
            metrics.SHED.labels(exc.layer, exc.reason).inc()
        return error_response(exc, retry_after_s=retry_after_s)

    @app.exception_handler(sa_exc.SQLAlchemyError)
    async def _db_error(request: Request, exc: sa_exc.SQLAlchemyError) -> JSONResponse:
        mapped = classify_db_error(exc)
        if mapped is None:
            log.exception("unexpected database error", exc_info=exc)
            return error_response(SluiceError(), retry_after_s=retry_after_s)
        metrics.SHED.labels(mapped.layer, mapped.reason).inc()
        metrics.DB_ERRORS.labels(mapped.reason).inc()
        return error_response(mapped, retry_after_s=retry_after_s)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = SluiceError(str(exc.detail), reason=_reason_for(exc.status_code))
        error.status_code = exc.status_code
        return error_response(error, retry_after_s=retry_after_s, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors, "reason": "validation_error"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(SluiceError(), retry_after_s=retry_after_s)


def _reason_for(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        408: "client_timeout",
        409: "conflict",
        413: "payload_too_large",
        422: "validation_error",
    }.get(status, "http_error")
