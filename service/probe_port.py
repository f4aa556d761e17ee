"""The probe port answers the probes only.

It is not gated (service/accept_gate.py) and nginx's connection cap does not
cover it, so serving the API there would open a way around both bounds for
anything that can reach the port.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

_BODY = json.dumps(
    {"detail": "This port serves /healthz and /readyz only.", "reason": "not_found"}
).encode()


class ProbePortOnly:
    """Answer 404 on the probe port for every path but the probes."""

    def __init__(self, app: ASGIApp, *, probe_port: int, probe_paths: frozenset[str]) -> None:
        self.app = app
        self.probe_port = probe_port
        self.probe_paths = probe_paths

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
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BODY))]
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": _BODY})
