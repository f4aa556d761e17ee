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
request slot free (service/server/gate.py); the slots belong to the app's
admission controller (service/admission.py). The probe port is served as
Uvicorn serves any port.
"""

from __future__ import annotations

import json
import sys
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from service.server import lifecycle
from service.settings import get_settings

# What a request's line and headers may take in all; nginx's are capped at its
# large_client_header_buffers (4 x 8k) before they get here. Uvicorn has no
# limit of its own for the httptools parser.
MAX_HEADER_BYTES = 32 * 1024
_HEADERS_TOO_LARGE = json.dumps(
    {"detail": "Request line and headers too large.", "reason": "headers_too_large"}
).encode()


class SluiceHttpProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, with two changes.

    Shutdown never cuts an idle connection: stopping only ends keep-alive, a
    request still arriving is answered with `Connection: close`, and an idle
    connection is left for its client to close. And a request's line and
    headers may take at most MAX_HEADER_BYTES (431 beyond), for callers that
    reach a worker without nginx. The overridden methods are the only private
    hooks Sluice uses in uvicorn (pinned to the range this was tested on,
    pyproject.toml).
    """

    draining = False
    _header_bytes = 0
    _refused = False

    def shutdown(self) -> None:
        self.draining = True
        lifecycle.draining.set()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            # The answer carries `Connection: close` and the connection ends with it.
            self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES and not self._refused:
            self._refused = True
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\n"
                b"content-length: " + str(len(_HEADERS_TOO_LARGE)).encode() + b"\r\n"
                b"connection: close\r\n\r\n" + _HEADERS_TOO_LARGE
            )
            self.transport.close()


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
        # hold its accept reservation for as long as it stayed open.
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
        # Imported here, in the worker: Gunicorn's master imports this module to
        # load the worker class, and the app's metrics must not be created in
        # the master (their multiprocess files would be its own, and the
        # directory is made only after that import, in on_starting).
        from service.admission import AdmissionController
        from service.server.gate import GatedServer

        self.config.app = self.wsgi
        # The app's admission controller owns the worker's slots; the gate
        # accepts only into one of them.
        controller = self.wsgi.state.admission
        assert isinstance(controller, AdmissionController)
        server = GatedServer(
            config=self.config,
            controller=controller,
            gated_ports=frozenset({settings.bind_port}),
        )
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
