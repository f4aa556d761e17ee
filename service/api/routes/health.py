"""Liveness and readiness. Both bypass admission control.

Readiness means "can take traffic": not draining, and the database answers.
Busy is not unready: a process at capacity sheds what it cannot serve (503 +
Retry-After), and a readiness probe that failed under load would take it out
of the load balancer and push its traffic onto the others, a cascade.
Saturation is a metric and an alert (sluice_db_pool_*, the SluiceDbPoolExhausted alert).
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from service.api.routing import OneHopRoute
from service.error_handlers import error_response
from service.errors import NotReady
from service.server import lifecycle

router = APIRouter(tags=["health"], route_class=OneHopRoute)

# A statement that succeeded this recently proves the database answers; older
# than this, the probe asks it. Under 1 s, so an outage shows within a second.
RECENT_SUCCESS_S = 0.75

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
    """Ready = not draining, and the database answered recently or answers now."""
    state = request.app.state
    retry_after_s: int = state.settings.retry_after_s
    if lifecycle.draining.is_set():
        return error_response(
            NotReady("This worker is shutting down.", reason="draining"),
            retry_after_s=retry_after_s,
        )
    if not state.db_liveness.answered_within(RECENT_SUCCESS_S) and not (
        await anyio.to_thread.run_sync(_database_answers, state.engine, limiter=_readiness_thread)
    ):
        return error_response(
            NotReady("The database is not reachable through the pool.", reason="db_unavailable"),
            retry_after_s=retry_after_s,
        )
    return {"status": "ready"}


def _database_answers(engine: Engine) -> bool:
    # Through the pool, so it waits at most pool_timeout when every connection is busy.
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True
