"""The accept gate: a worker takes a connection only when it can give it a request slot.

Gunicorn's workers share one listening socket. Uvicorn accepts every
connection it can, at once, so one worker would take connections it can only
queue while another has a slot free. The gate accepts on the app port only
while the worker's admission controller (service/admission.py, the one owner
of the worker's slots) can `reserve()` a slot, so everything nginx lets
through beyond the free slots waits in the kernel's accept queue: one shared,
first-come waiting room in front of every worker's slots, where a waiting
request costs no CPU, bounded by nginx's cap and by the listen backlog and
measured by the master (`sluice_listen_backlog`) and, per request, by its
sojourn (`sluice_request_queue_seconds`).

A connection holds its reservation until its first request claims it (the
admission middleware, from `RESERVATION`), or until it closes: nginx opens a
connection per request, so a reservation normally lives for the time it
takes uvicorn to read one request header. A connection that sends no
complete request within FIRST_REQUEST_TIMEOUT_S is closed, so a silent or
half-sent header cannot hold a slot. The slot then stays with the request
until its handler ends, even when its client has gone (its thread and
database connection are still busy): the middleware gives it back, not the
connection.

When the worker is stalled (every slot held and none given back for a
while, typically a stuck database), waiting would only end with the stall,
so the gate accepts again, without a reservation: those requests meet the
admission middleware, which refuses them at once (`stalled`), and the
waiting room empties in milliseconds instead of when the stall ends.

The probe port is not gated: a worker whose slots are all held (a slow
database) still answers /healthz and /readyz at once, so being busy never
looks like being unready.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from uvicorn.server import Server

from service.admission import RESERVATION, AdmissionController, Reservation

# nginx writes its request as soon as it has connected; a connection that
# stays silent this long holds a slot for nothing (uvicorn itself would wait
# for it forever).
FIRST_REQUEST_TIMEOUT_S = 5.0
# Out of file descriptors or memory the pending connection stays readable; the
# gate stops watching for this long instead of spinning (as asyncio does).
ACCEPT_RETRY_S = 1.0
# The client left between the kernel's queue and the accept: nothing to do.
_CLIENT_GONE = frozenset({errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO})

log = logging.getLogger("sluice.gate")


class AcceptGate:
    """Accepts from the listening sockets while the controller has a slot free.

    The gate accepts from inside the event loop's reader callback and stops
    watching the sockets while the worker is full, so stopping never
    interrupts an accept halfway: a connection is either handed to the worker
    with its reservation or still in the kernel's queue for another worker.
    """

    def __init__(
        self,
        controller: AdmissionController,
        *,
        on_accept: Callable[[socket.socket, Reservation | None], None],
    ) -> None:
        self.controller = controller
        self._on_accept = on_accept
        self._sockets: list[socket.socket] = []
        self._watching = False
        self._retry: asyncio.TimerHandle | None = None
        self._stall_check: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        controller.on_release = self._slot_freed

    def open(self, sockets: list[socket.socket]) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = sockets
        for sock in sockets:
            sock.setblocking(False)
        self._watch()

    def close(self) -> None:
        self._unwatch()
        for timer in (self._retry, self._stall_check):
            if timer is not None:
                timer.cancel()
        self._retry = self._stall_check = None
        self._sockets = []

    def _slot_freed(self) -> None:
        if self.controller.has_room:
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
        while self._watching:
            reservation = self.controller.reserve()
            if reservation is None and not self.controller.stalled:
                self._unwatch()  # a released slot watches again
                self._check_for_stall_later()
                return
            # With no reservation (stalled), the request is refused at once.
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                if reservation is not None:
                    reservation.end()  # another worker took it
                return
            except OSError as exc:
                if reservation is not None:
                    reservation.end()
                if exc.errno in _CLIENT_GONE:
                    continue
                log.error("accept failed (%s); retrying in %.0f s", exc, ACCEPT_RETRY_S)
                self._unwatch()
                assert self._loop is not None
                self._retry = self._loop.call_later(ACCEPT_RETRY_S, self._resume)
                return
            conn.setblocking(False)
            self._on_accept(conn, reservation)

    def _resume(self) -> None:
        self._retry = None
        if self.controller.has_room:
            self._watch()

    def _check_for_stall_later(self) -> None:
        if self._stall_check is not None or self._loop is None:
            return
        controller = self.controller
        due = controller.full_since + controller.stall_after_s - time.monotonic()
        self._stall_check = self._loop.call_later(max(0.0, due) + 0.01, self._stall_checked)

    def _stall_checked(self) -> None:
        self._stall_check = None
        if self.controller.has_room or self.controller.stalled:
            self._watch()
        else:  # a slot was given back and taken again meanwhile
            self._check_for_stall_later()


class GatedConnection(asyncio.Protocol):
    """Uvicorn's protocol for one accepted connection, carrying the connection's reservation.

    Every call is passed on unchanged. Around `data_received`, where uvicorn
    parses a request and starts its task, the reservation is the current
    `RESERVATION`, so the task (which copies the context it is created in)
    hands it to the admission middleware. When the connection ends, a
    reservation no request claimed is given back.
    """

    def __init__(self, inner: asyncio.Protocol, reservation: Reservation | None) -> None:
        self._inner = inner
        self.reservation = reservation
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(
            FIRST_REQUEST_TIMEOUT_S, self._first_request_overdue
        )
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        token = RESERVATION.set(self.reservation)
        try:
            self._inner.data_received(data)
        finally:
            RESERVATION.reset(token)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.reservation is not None:
            self.reservation.end()
        self._inner.connection_lost(exc)

    def _first_request_overdue(self) -> None:
        transport = self._transport
        started = self.reservation is not None and self.reservation.claimed
        if not started and transport is not None and not transport.is_closing():
            transport.close()


class GatedServer(Server):
    """Uvicorn's server, accepting on the gated port only while the worker has a slot free."""

    def __init__(
        self, config: Any, *, controller: AdmissionController, gated_ports: frozenset[int]
    ) -> None:
        super().__init__(config=config)
        self.gate = AcceptGate(controller, on_accept=self._hand_over)
        self.gated_ports = gated_ports
        self._create_protocol: Callable[[], asyncio.Protocol] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        sockets = sockets or []
        gated = [s for s in sockets if _port(s) in self.gated_ports]
        if not gated or self.config.reset_contextvars:
            # Serving the app port ungated, or without the context that carries
            # a connection's reservation to its request, would quietly drop a bound.
            ports = ", ".join(str(_port(s)) for s in sockets)
            log.error(
                "cannot gate %s (listening on %s; reset_contextvars=%s)",
                sorted(self.gated_ports),
                ports,
                self.config.reset_contextvars,
            )
            self.should_exit = True
            return
        # Uvicorn serves the other sockets (the probe port) as usual.
        await super().startup(sockets=[s for s in sockets if s not in gated])
        if self.should_exit:
            return
        config = self.config
        # Uvicorn types it as a bare asyncio.Protocol; it is the class named by
        # the worker's "http" setting, which takes these arguments.
        protocol_class: Any = config.http_protocol_class

        def create_protocol() -> asyncio.Protocol:
            protocol = protocol_class(
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return cast(asyncio.Protocol, protocol)

        self._create_protocol = create_protocol
        self.gate.open(gated)

    def _hand_over(self, conn: socket.socket, reservation: Reservation | None) -> None:
        assert self._create_protocol is not None
        task = asyncio.get_running_loop().create_task(
            self._connect(conn, reservation, self._create_protocol)
        )
        # Uvicorn's shutdown waits for these as for its own connection tasks.
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    async def _connect(
        self,
        conn: socket.socket,
        reservation: Reservation | None,
        create_protocol: Callable[[], asyncio.Protocol],
    ) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: GatedConnection(create_protocol(), reservation), conn, ssl=self.config.ssl
            )
        except Exception as exc:
            conn.close()
            # A connection that was made gives its reservation back when it is lost.
            if reservation is not None:
                reservation.end()
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
