"""Liveness and readiness. Both bypass admission control."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import QueuePool

router = APIRouter(tags=["health"])

# Health checks run on the event loop, or on a thread of their own: the
# request threadpool may be full of requests waiting on a slow database, and
# a liveness probe stuck behind them would get a healthy process killed.
_readiness_thread = anyio.CapacityLimiter(1)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving; touches nothing else."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(request: Request) -> Any:
    """Ready = the database answers through the pool, and the pool is not saturated."""
    engine = request.app.state.engine
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    if pool.checkedout() >= pool.size() + max(0, pool._max_overflow):
        return _not_ready("pool_saturated", "Every pooled database connection is in use.")
    if not await anyio.to_thread.run_sync(_database_answers, engine, limiter=_readiness_thread):
        return _not_ready("db_unavailable", "The database is not reachable through the pool.")
    return {"status": "ready"}


def _database_answers(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


def _not_ready(reason: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "reason": reason}, status_code=503, headers={"Retry-After": "1"}
    )
