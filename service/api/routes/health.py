"""Liveness and readiness. Both bypass admission control."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import QueuePool

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive and serving; touches nothing else."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
def readyz(request: Request) -> Any:
    """Ready = the database answers through the pool, and the pool is not saturated."""
    engine = request.app.state.engine
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    if pool.checkedout() >= pool.size() + max(0, pool._max_overflow):
        return _not_ready("pool_saturated", "Every pooled database connection is in use.")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return _not_ready("db_unavailable", "The database is not reachable through the pool.")
    return {"status": "ready"}


def _not_ready(reason: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "reason": reason}, status_code=503, headers={"Retry-After": "1"}
    )
