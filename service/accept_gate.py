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

A slot is held by a new connection from accept until its first request
starts, then by each request until its handler ends (nginx opens a connection
per request); an idle keep-alive connection holds none, and a request arriving
on one still meets the admission queue. A request whose client has gone keeps
its slot until its handler ends: its thread and database connection are busy.

The probe port is not gated: a worker whose slots are all held (a slow
database) still answers /healthz and /readyz at once, so being busy never
looks like being unready.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from uvicorn.server import Server

# nginx writes its request as soon as it has connected; a connection that
# stays silent this long holds a slot for nothing (uvicorn itself would wait
# for it forever).
FIRST_REQUEST_TIMEOUT_S = 5.0
# Out of file descriptors or memory the pending connection stays readable; the
# gate stops watching for this long instead of spinning (as asyncio does).
ACCEPT_RETRY_S = 1.0
# The client left between the kernel's queue and the accept: nothing to do.
_CLIENT_GONE = frozenset({errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO})

log = logging.getLogger("sluice.accept_gate")


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
        self._retry: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, sockets: list[socket.socket]) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = sockets
        for sock in sockets:
            sock.setblocking(False)
        self._watch()

    def close(self) -> None:
        self._unwatch()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
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
        if self._watching or self._retry is not None or not self._sockets or self._loop is None:
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
            except OSError as exc:
                if exc.errno in _CLIENT_GONE:
                    continue
                log.error("accept failed (%s); retrying in %.0f s", exc, ACCEPT_RETRY_S)
                self._unwatch()
                assert self._loop is not None
                self._retry = self._loop.call_later(ACCEPT_RETRY_S, self._resume)
                return
            conn.setblocking(False)
            self.occupy()  # the protocol frees it (service/worker.py)
            self._on_accept(conn)

    def _resume(self) -> None:
        self._retry = None
        if self.busy < self.limit:
            self._watch()


class GatedServer(Server):
    """Uvicorn's server, accepting on the gated sockets only while the gate has room."""

    def __init__(self, config: Any, *, limit: int, gated_ports: frozenset[int]) -> None:
        super().__init__(config=config)
        self.gate = AcceptGate(limit, on_accept=self._hand_over)
        self.gated_ports = gated_ports
        self._create_protocol: Callable[[], asyncio.Protocol] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        sockets = sockets or []
        gated = [s for s in sockets if _port(s) in self.gated_ports]
        if not gated:
            # Serving the app port ungated would quietly drop a bound.
            ports = ", ".join(str(_port(s)) for s in sockets)
            log.error(
                "no listening socket on %s to gate (listening on %s)",
                sorted(self.gated_ports),
                ports,
            )
            self.should_exit = True
            return
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
        made: list[asyncio.Protocol] = []

        def make() -> asyncio.Protocol:
            made.append(create_protocol())
            return made[-1]

        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                make, conn, ssl=self.config.ssl
            )
        except Exception as exc:
            conn.close()
            # A protocol that saw its connection frees the slot when it is lost.
            if not made or getattr(made[0], "transport", None) is None:
                self.gate.free()
            if not isinstance(exc, OSError):  # OSError: the client was gone already
                log.error("could not hand over an accepted connection", exc_info=exc)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first: what waits in the accept queue goes to the
        # workers that stay (a reload) or is refused when the master closes it.
        self.gate.close()
        await super().shutdown(sockets)


def _port(sock: socket.socket) -> int | None:
    address = sock.getsockname()
    return address[1] if isinstance(address, tuple) else None  # a Unix socket has none
