"""The ASGI application: `service.main:app` (Gunicorn) or `create_app(settings)` (tests)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute

from service import error_handlers
from service.admission import AdmissionController, AdmissionMiddleware, SojournPolicy
from service.api.routes import health, items, login, users
from service.api.routing import OneHopRoute
from service.db import DatabaseLiveness, create_db_engine, create_session_factory
from service.mail import Mailer
from service.passwords import PasswordHasher
from service.request_metrics import RequestMetricsMiddleware
from service.server.probe_port import ProbePortOnly
from service.settings import Settings, get_settings

API_PREFIX = "/api/v1"
UNADMITTED_PATHS = frozenset({"/healthz", "/readyz"})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    limits = settings.limits
    engine = create_db_engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.admission_enabled:
            # Sync endpoints run in this threadpool; sized to the admission limit
            # so an admitted request never waits for a thread (fastapi#3205).
            # Without admission (the benchmark's plain deployment) anyio's
            # default stays, as in a project that does not size it.
            anyio.to_thread.current_default_thread_limiter().total_tokens = limits.max_in_flight
        yield
        engine.dispose()

    app = FastAPI(
        title="Sluice",
        version="0.1.0",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.db_liveness = DatabaseLiveness(engine)
    app.state.session_factory = create_session_factory(engine)
    app.state.admission = AdmissionController(
        max_in_flight=limits.max_in_flight,
        queue_length=limits.queue_length,
        discipline=settings.admission_discipline,
        stall_after_s=limits.standing_interval_ms / 1000,
    )
    app.state.passwords = PasswordHasher(
        concurrency=settings.password_hash_concurrency,
        wait_s=settings.password_hash_wait_ms / 1000,
    )
    app.state.mailer = Mailer(settings)

    # Routes added to the app itself run in one hop too (service/api/routing.py).
    app.router.route_class = OneHopRoute
    app.include_router(health.router)
    for router in (login.router, users.router, items.router):
        app.include_router(router, prefix=API_PREFIX)
    _check_one_hop(app)
    error_handlers.install(app, retry_after_s=settings.retry_after_s)

    if settings.admission_enabled:
        app.add_middleware(
            AdmissionMiddleware,
            controller=app.state.admission,
            sojourn=SojournPolicy(
                target_s=settings.target_latency_ms / 1000,
                budget_s=limits.queue_wait_ms / 1000,
                interval_s=limits.standing_interval_ms / 1000,
            ),
            queue_wait_s=limits.queue_wait_ms / 1000,
            deadline_s=limits.request_deadline_ms / 1000,
            body_timeout_s=settings.body_timeout_s,
            retry_after_s=settings.retry_after_s,
            bypass_paths=UNADMITTED_PATHS,
        )
    # Outside admission, so its refusals are counted and timed too.
    app.add_middleware(RequestMetricsMiddleware)
    app.add_middleware(
        ProbePortOnly,
        probe_port=settings.probe_port,
        probe_paths=UNADMITTED_PATHS,
        retry_after_s=settings.retry_after_s,
    )
    logging.getLogger("sluice").setLevel(settings.log_level.upper())
    return app


def _check_one_hop(app: FastAPI) -> None:
    """A sync endpoint on a plain APIRoute would get a deferred user, not a User: refuse."""
    plain = [
        route.path
        for route in app.routes
        if isinstance(route, APIRoute) and not isinstance(route, OneHopRoute)
    ]
    if plain:
        raise RuntimeError(
            f"routes {plain} are not OneHopRoute: create their APIRouter with "
            "route_class=OneHopRoute (service/api/routing.py)"
        )


def __getattr__(name: str) -> FastAPI:
    # `service.main:app` is built on first access, so importing the module
    # (tests, tools) does not read the environment.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
