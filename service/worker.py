"""The Gunicorn worker: Uvicorn's, accepting only into a free slot, never cutting idle connections.

HTTP/1.1 cannot tell a client "do not reuse this connection" except in a
response. Uvicorn's graceful shutdown closes idle keep-alive connections at
once, and a client may be writing its next request into one of them at that
very moment: it gets a reset, and it may not retry a POST (the app might have
seen it), so a rolling reload (HUP) under load answered an odd request with
502 when nginx kept upstream connections alive.

Sluice's nginx now opens a connection per request (no upstream keepalive, see
its template), so it leaves no idle connection behind; the worker keeps the
guarantee for any client that does keep one (a proxy configured otherwise, a
direct caller): a stopping worker leaves idle connections open, a request
still arriving on one is served with `Connection: close`, and the client
closes the rest. Whoever closes an idle connection must be the side that
would send on it next. Stopping also marks the process as draining, which
/readyz reports.

On the app port the worker accepts a connection only while it has a
request slot free (service/accept_gate.py); the protocol tells the gate when
a connection is busy. The probe port is served as Uvicorn serves any port.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn_worker import UvicornWorker

from service import lifecycle
from service.accept_gate import FIRST_REQUEST_TIMEOUT_S, AcceptGate, GatedServer
from service.settings import get_settings


class SluiceHttpProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, with two changes.

    Shutdown only stops keep-alive, never cuts an idle connection. And the
    accept gate learns what holds a slot: a new connection until its first
    request starts (or it closes), then each request until its handler ends,
    even if the client left before it (the thread and its database connection
    are still in use).
    """

    draining = False
    gate: AcceptGate | None = None  # set on connections accepted through the gate
    # The slot the gate counted at accept, until the first request takes it over.
    _holds_accept_slot = False
    _first_request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.gate is not None:
            self._holds_accept_slot = True
            # Uvicorn would wait forever for a first request, silent or half-sent.
            self._first_request_timer = self.loop.call_later(
                FIRST_REQUEST_TIMEOUT_S, self._first_request_overdue
            )

    def _first_request_overdue(self) -> None:
        if self._holds_accept_slot and not self.transport.is_closing():
            self.transport.close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        gate = self.gate
        if gate is None:
            super()._start_asgi_task(cycle, app)
            return
        if not self._end_first_request_wait():
            gate.occupy()

        async def holding_a_slot(
            scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
        ) -> None:
            try:
                await app(scope, receive, send)
            finally:
                gate.free()

        super()._start_asgi_task(cycle, holding_a_slot)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._end_first_request_wait() and self.gate is not None:
            self.gate.free()
        super().connection_lost(exc)

    def _end_first_request_wait(self) -> bool:
        """Stop the first-request timer; whether this connection still held the accept's slot."""
        if not self._holds_accept_slot:
            return False
        self._holds_accept_slot = False
        if self._first_request_timer is not None:
            self._first_request_timer.cancel()
        return True

    def shutdown(self) -> None:
        self.draining = True
        lifecycle.draining.set()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            # The answer carries `Connection: close` and the connection ends with it.
            self.cycle.keep_alive = False


# The event loop shares the GIL with up to L request threads. At Python's
# default 5 ms switch interval it waits up to L x 5 ms for its turn, and every
# refusal, every accept and every admitted request's start waits with it;
# 1 ms keeps the loop responsive at a small cost in switching.
GIL_SWITCH_INTERVAL_S = 0.001


class SluiceUvicornWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker has no hints
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": f"{__name__}:SluiceHttpProtocol",
        # The app has no WebSocket routes, and an upgraded connection would
        # leave the HTTP protocol without ever giving its slot back.
        "ws": "none",
    }

    def init_process(self) -> None:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        super().init_process()

    async def _serve(self) -> None:
        """uvicorn-worker's `_serve`, with the accept gate on the app port when admission is on."""
        settings = get_settings()
        if not settings.admission_enabled:
            await super()._serve()
            return
        self.config.app = self.wsgi
        server = GatedServer(
            config=self.config,
            limit=settings.limits.max_in_flight,
            gated_ports=frozenset({settings.bind_port}),
        )
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
