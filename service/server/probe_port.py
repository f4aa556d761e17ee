"""The probe port answers the probes only.

It is not gated (service/server/gate.py) and nginx's connection cap does not
cover it, so serving the API there would open a way around both bounds for
anything that can reach the port.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.error_handlers import error_response
from service.errors import NotFound


class ProbePortOnly:
    """Answer 404 on the probe port for every path but the probes."""

    def __init__(
        self, app: ASGIApp, *, probe_port: int, probe_paths: frozenset[str], retry_after_s: int
    ) -> None:
        self.app = app
        self.probe_port = probe_port
        self.probe_paths = probe_paths
        self._not_here = error_response(
            NotFound("This port serves /healthz and /readyz only."), retry_after_s=retry_after_s
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if (
            scope["type"] != "http"
            or not server
            or server[1] != self.probe_port
            or scope["path"] in self.probe_paths
        ):
            await self.app(scope, receive, send)
            return
        await self._not_here(scope, receive, send)
