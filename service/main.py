"""The ASGI application: `service.main:app` (Gunicorn) or `create_app(settings)` (tests)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from service import error_handlers
from service.admission import AdmissionController, AdmissionMiddleware
from service.api.routes import health, items, login, users
from service.db import DatabaseLiveness, create_db_engine, create_session_factory
from service.mail import Mailer
from service.passwords import PasswordHasher
from service.probe_port import ProbePortOnly
from service.request_metrics import RequestMetricsMiddleware
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
    )
    app.state.passwords = PasswordHasher(
        concurrency=settings.password_hash_concurrency,
        wait_s=settings.password_hash_wait_ms / 1000,
    )
    app.state.mailer = Mailer(settings)

    app.include_router(health.router)
    for router in (login.router, users.router, items.router):
        app.include_router(router, prefix=API_PREFIX)
    error_handlers.install(app, retry_after_s=settings.retry_after_s)

    if settings.admission_enabled:
        app.add_middleware(
            AdmissionMiddleware,
            controller=app.state.admission,
            queue_wait_s=limits.queue_wait_ms / 1000,
            deadline_s=limits.request_deadline_ms / 1000,
            retry_after_s=settings.retry_after_s,
            bypass_paths=UNADMITTED_PATHS,
        )
    # Outside admission, so its refusals are counted and timed too.
    app.add_middleware(RequestMetricsMiddleware)
    app.add_middleware(ProbePortOnly, probe_port=settings.probe_port, probe_paths=UNADMITTED_PATHS)
    logging.getLogger("sluice").setLevel(settings.log_level.upper())
    return app


def __getattr__(name: str) -> FastAPI:
    # `service.main:app` is built on first access, so importing the module
    # (tests, tools) does not read the environment.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
