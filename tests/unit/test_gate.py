"""The accept gate and the gated server: a real uvicorn server on a real socket.

No stack: a small ASGI app behind Sluice's admission middleware, served by
`GatedServer` with Sluice's HTTP protocol, driven by raw sockets, so what
these tests see is what a worker does with nginx's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from uvicorn import Config

from service.admission import AdmissionController, AdmissionMiddleware, SojournPolicy
from service.server import gate
from service.server.gate import ACCEPT_RETRY_S, AcceptGate, GatedServer

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class HoldingApp:
    """Answers 200; `/hold` waits until `release` is set, and counts who started."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.finished: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.started.append(scope["path"])
        if scope["path"] == "/hold":
            await self.release.wait()
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
        self.finished.append(scope["path"])


@asynccontextmanager
async def gated_server(
    slots: int, *, stall_after_s: float = 30.0
) -> AsyncIterator[tuple[int, AdmissionController, HoldingApp]]:
    """A GatedServer with `slots` slots on an ephemeral port, stopped on exit."""
    app = HoldingApp()
    controller = AdmissionController(
        max_in_flight=slots, queue_length=4, stall_after_s=stall_after_s
    )
    asgi = AdmissionMiddleware(
        app,  # type: ignore[arg-type]
        controller=controller,
        sojourn=SojournPolicy(target_s=10.0, budget_s=5.0, interval_s=20.0),
        queue_wait_s=5.0,
        deadline_s=30.0,
        body_timeout_s=1.0,
        retry_after_s=1,
        bypass_paths=frozenset({"/healthz"}),
    )
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    port = sock.getsockname()[1]
    config = Config(
        asgi,
        http="service.server.worker:SluiceHttpProtocol",
        ws="none",
        lifespan="off",
        log_level="warning",
    )
    server = GatedServer(config, controller=controller, gated_ports=frozenset({port}))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port, controller, app
    finally:
        app.release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def request(
    port: int, path: str, *, keep_alive: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = "keep-alive" if keep_alive else "close"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: {connection}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def closed(*writers: asyncio.StreamWriter) -> None:
    for writer in writers:
        writer.close()
        with contextlib.suppress(OSError):  # the server closed it first
            await writer.wait_closed()


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_a_full_worker_leaves_new_connections_in_the_accept_queue() -> None:
    """With every slot held, the next connection waits unaccepted, then runs, never refused."""

    async def scenario() -> None:
        async with gated_server(slots=1) as (port, controller, app):
            _, held = await request(port, "/hold")
            await until(lambda: app.started == ["/hold"])
            reader, writer = await request(port, "/next")
            await asyncio.sleep(0.3)
            # Not accepted: no reservation, nothing started, nothing refused.
            assert controller.in_flight == 1 and app.started == ["/hold"]
            app.release.set()
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert app.started == ["/hold", "/next"]
            await until(lambda: controller.in_flight == 0)
            await closed(held, writer)

    asyncio.run(scenario())


def test_a_stalled_worker_refuses_what_waits_instead_of_keeping_it() -> None:
    """No slot given back for stall_after_s: waiting requests are taken in and refused at once."""

    async def scenario() -> None:
        async with gated_server(slots=1, stall_after_s=0.3) as (port, controller, app):
            _, held = await request(port, "/hold")
            await until(lambda: app.started == ["/hold"])
            sent = time.monotonic()
            reader, writer = await request(port, "/waiting")
            answer = await asyncio.wait_for(reader.read(), 5)
            waited = time.monotonic() - sent
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert b'"reason":"stalled"' in answer and b"retry-after: 1" in answer.lower()
            assert waited < 2.0, waited  # the stall, not the held request, decided
            assert app.started == ["/hold"], "a refused request never reaches the app"
            app.release.set()
            await until(lambda: controller.in_flight == 0)
            reader, writer2 = await request(port, "/after")
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
            await closed(held, writer, writer2)

    asyncio.run(scenario())


def test_a_request_whose_client_left_keeps_its_slot_until_its_handler_ends() -> None:
    async def scenario() -> None:
        async with gated_server(slots=1) as (port, controller, app):
            _, writer = await request(port, "/hold")
            await until(lambda: app.started == ["/hold"])
            writer.close()  # the client gives up
            await asyncio.sleep(0.2)
            assert controller.in_flight == 1, "the handler still runs: its slot is busy"
            app.release.set()
            await until(lambda: controller.in_flight == 0)
            await closed(writer)

    asyncio.run(scenario())


def test_a_silent_connection_gives_its_reservation_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that never sends a request is closed after FIRST_REQUEST_TIMEOUT_S."""
    monkeypatch.setattr(gate, "FIRST_REQUEST_TIMEOUT_S", 0.3)

    async def scenario() -> None:
        async with gated_server(slots=1) as (port, controller, app):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /half HTTP/1.1\r\nHost")  # a header that never ends
            await until(lambda: controller.in_flight == 1)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
            await until(lambda: controller.in_flight == 0)
            assert app.started == []
            await closed(writer)

    asyncio.run(scenario())


def test_the_first_request_takes_over_the_reservation_and_keep_alive_ones_queue() -> None:
    """One slot per connection at accept; a second request on it is admitted like any other."""

    async def scenario() -> None:
        async with gated_server(slots=1) as (port, controller, app):
            reader, writer = await request(port, "/first", keep_alive=True)
            head = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            await until(lambda: controller.in_flight == 0)
            writer.write(b"GET /second HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            await writer.drain()
            assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
            assert app.finished == ["/first", "/second"]
            await until(lambda: controller.in_flight == 0)
            await closed(writer)

    asyncio.run(scenario())


def test_the_gate_waits_instead_of_spinning_when_out_of_file_descriptors() -> None:
    """EMFILE leaves the connection pending and readable: retry later, not at once.

    Watching on would call the accept callback on every pass of the event
    loop (a worker at 100 % CPU doing nothing); the gate stops watching for
    ACCEPT_RETRY_S and then takes the connection once descriptors are free.
    """

    async def scenario() -> tuple[float, float, int, int]:
        accepted: list[socket.socket] = []
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        controller = AdmissionController(max_in_flight=2, queue_length=0)
        accept_gate = AcceptGate(controller, on_accept=lambda conn, _: accepted.append(conn))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest_free = os.open(os.devnull, os.O_RDONLY)
        os.close(lowest_free)
        try:
            # The next descriptor would be the limit itself: accept() gets EMFILE.
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
            cpu = time.process_time()
            accept_gate.open([listener])
            await asyncio.sleep(ACCEPT_RETRY_S / 2)
            cpu_while_out = time.process_time() - cpu
            held_while_out = controller.in_flight
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        waited = time.monotonic()
        while not accepted and time.monotonic() - waited < ACCEPT_RETRY_S + 5:
            await asyncio.sleep(0.05)
        waited = time.monotonic() - waited
        accept_gate.close()
        for sock in (*accepted, client, listener):
            sock.close()
        return cpu_while_out, waited, len(accepted), held_while_out

    cpu_while_out, waited, accepted, held_while_out = asyncio.run(scenario())
    print(f"\nCPU while out of descriptors {cpu_while_out:.3f} s; accepted {waited:.2f} s later")
    # Spinning would burn most of the half second; a busy 2-core machine
    # still leaves a wide margin.
    assert cpu_while_out < ACCEPT_RETRY_S / 5
    assert held_while_out == 0, "a failed accept gives its reservation back"
    assert accepted == 1
