"""A worker accepts a connection only while it has a request slot free.

Gunicorn's workers share one listening socket. Uvicorn accepts every
connection it can, at once, so one worker would take connections it can only
queue while another has a slot free: with nginx's cap at exactly the slots
(service/sizing.py) admitted requests waited 7.8 ms on average in a busy
worker's admission queue at overload (1.1 ms with this gate), and nginx
refused requests at light load that an idle slot could have run
(docs/benchmark.md, "The accept gate"). Accepting only while `busy < L`
leaves the rest in the kernel's accept queue, which every worker takes from:
one shared, first-come queue in front of all the slots, bounded by the listen
backlog and measured by the master (`sluice_listen_backlog`).

A connection counts as busy from accept until its response is complete (nginx
opens one per request); an idle keep-alive connection does not, and a request
arriving on one still meets the admission queue.

The probe port is not gated: a worker whose slots are all held (a slow
database) still answers /healthz and /readyz at once, so being busy never
looks like being unready.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

from uvicorn.server import Server

# nginx writes its request as soon as it has connected; a connection that
# stays silent this long holds a slot for nothing (uvicorn itself would wait
# for it forever).
FIRST_REQUEST_TIMEOUT_S = 5.0


class AcceptGate:
    """How many of the worker's connections are busy; accepting while fewer than the limit.

    The gate accepts from inside the event loop's reader callback and stops
    watching the listening sockets while full, so stopping never interrupts
    an accept halfway: a connection is either handed to the worker or still
    in the kernel's queue for another worker to take.
    """

    def __init__(self, limit: int, *, on_accept: Callable[[socket.socket], None]) -> None:
        self.limit = limit
        self.busy = 0
        self._on_accept = on_accept
        self._sockets: list[socket.socket] = []
        self._watching = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, sockets: list[socket.socket]) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = sockets
        for sock in sockets:
            sock.setblocking(False)
        self._watch()

    def close(self) -> None:
        self._unwatch()
        self._sockets = []

    def occupy(self) -> None:
        self.busy += 1
        if self.busy >= self.limit:
            self._unwatch()

    def free(self) -> None:
        self.busy -= 1
        if self.busy < self.limit:
            self._watch()

    def _watch(self) -> None:
        if self._watching or not self._sockets or self._loop is None:
            return
        self._watching = True
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _unwatch(self) -> None:
        if not self._watching or self._loop is None:
            return
        self._watching = False
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())

    def _accept(self, sock: socket.socket) -> None:
        while self.busy < self.limit and self._watching:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker took it
            except OSError:
                return  # e.g. ECONNABORTED: the client left before the accept
            conn.setblocking(False)
            self.occupy()  # the protocol frees it when the response is complete
            self._on_accept(conn)


class GatedServer(Server):
    """Uvicorn's server, accepting on the gated sockets only while the gate has room."""

    def __init__(self, config: Any, *, limit: int, gated_ports: frozenset[int]) -> None:
        super().__init__(config=config)
        self.gate = AcceptGate(limit, on_accept=self._hand_over)
        self.gated_ports = gated_ports
        self._create_protocol: Callable[[], asyncio.Protocol] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        sockets = sockets or []
        gated = [s for s in sockets if s.getsockname()[1] in self.gated_ports]
        # Uvicorn serves the other sockets (the probe port) as usual.
        await super().startup(sockets=[s for s in sockets if s not in gated])
        if self.should_exit:
            return
        config, gate = self.config, self.gate
        # Uvicorn types it as a bare asyncio.Protocol; it is the class named by
        # the worker's "http" setting, which takes these arguments and a gate.
        protocol_class: Any = config.http_protocol_class

        def create_protocol() -> asyncio.Protocol:
            protocol = protocol_class(
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            protocol.gate = gate
            return cast(asyncio.Protocol, protocol)

        self._create_protocol = create_protocol
        gate.open(gated)

    def _hand_over(self, conn: socket.socket) -> None:
        assert self._create_protocol is not None
        task = asyncio.get_running_loop().create_task(self._connect(conn, self._create_protocol))
        # Uvicorn's shutdown waits for these as for its own connection tasks.
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    async def _connect(
        self, conn: socket.socket, create_protocol: Callable[[], asyncio.Protocol]
    ) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(create_protocol, conn)
        except OSError:
            conn.close()  # the client was gone already
            self.gate.free()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first: what waits in the accept queue goes to the
        # workers that stay (a reload) or is refused when the master closes it.
        self.gate.close()
        await super().shutdown(sockets)
