"""The open-loop load generator: asyncio with a lean HTTP/1.1 client.

Request i is sent at its scheduled offset whatever happened to the others.
At most `max_in_flight` requests are outstanding, one keep-alive connection
each; a request due while the cap is full is recorded as NOT_SENT, never
delayed, so the generator cannot quietly lower the offered rate. Each request
has a client timeout counted from its scheduled time. Latency is measured from
the scheduled time too, so the generator's own lateness (`lag`) is charged to
the result rather than hidden; its ceiling is measured against a trivial
target (bench.calibrate).

Every request names the client that sends it (`Request.client`), and each
client has its own pool of keep-alive connections. With `sources`, client c's
connections are opened from its own address (`sources[c]`, e.g. 127.0.0.10 +
c: Linux routes all of 127.0.0.0/8 to the loopback interface), so the server
sees distinct clients as distinct peers (nginx's `$remote_addr`), as its
per-address limits expect.

`run_closed_loop` is the other shape, for one question only: how a client
that keeps exactly N requests in flight is treated.

The client is asyncio protocols plus httptools (the C parser uvicorn uses),
with each request serialised before the run: aiohttp's client costs several
times more CPU per request, which on a 2-core box is CPU taken from the server
under test.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httptools

from bench.schedule import due_by
from bench.stats import NOT_SENT, TIMEOUT, Outcome

# The first request is due this long after the run starts.
T = TypeVar("T")
_LEAD_S = 0.05
# Enough of a refusal's body for its JSON "reason".
_BODY_LIMIT = 512


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    kind: str
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    tag: str = ""
    client: int = 0  # who sends it: its connection pool, and its source address if any


@dataclass
class LoadResult:
    outcomes: list[Outcome]
    wall_s: float  # from the first scheduled send to the last answer
    cpu_s: float  # the generator process's CPU time during the run
    max_in_flight_seen: int
    connections_opened: int


def serialise(request: Request, *, host: str, headers: Mapping[str, str]) -> bytes:
    """The request's bytes on the wire (HTTP/1.1, keep-alive)."""
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host}"]
    merged = {**headers, **request.headers}
    lines += [f"{name}: {value}" for name, value in merged.items()]
    body = request.body or b""
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports do not subclass asyncio's
        self.closed = False
        self._on_done: Callable[[int, str, bytes], None] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._complete = False
        self._status = 0
        self._keep_alive = False
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish(0, "BadResponse")
            self.close()
            return
        if self._complete:
            if not self._keep_alive:
                self.closed = True
            body, self._body = b"".join(self._body), []
            self._parser = httptools.HttpResponseParser(self)
            self._complete = False
            self._finish(self._status, "", body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish(0, type(exc).__name__ if exc else "ConnectionClosed")

    # httptools callbacks; keep-alive is only known until the message completes.
    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, chunk: bytes) -> None:
        if not 200 <= self._status < 300:  # only refusals and errors say why
            self._body.append(chunk)

    def on_message_complete(self) -> None:
        self._complete = True

    def send(self, payload: bytes, on_done: Callable[[int, str, bytes], None]) -> None:
        self._on_done = on_done
        self._complete = False
        self.transport.write(payload)

    def close(self) -> None:
        """Abort the connection; a pending request's callback is dropped, not called."""
        self._on_done = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, status: int, error: str, body: bytes = b"") -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(status, error, body)


class _Flight:
    """One request on its way: its connection, its timeout timer, its outcome once."""

    __slots__ = ("conn", "done", "index", "scheduled", "sent", "timer")

    def __init__(self, index: int, scheduled: float, sent: float) -> None:
        self.index = index
        self.scheduled = scheduled
        self.sent = sent
        self.conn: _Connection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.done = False


def _target(base_url: str) -> tuple[str, int]:
    split = urlsplit(base_url)
    if split.scheme != "http" or split.hostname is None:
        raise ValueError(f"only plain http://host:port targets: {base_url}")
    return split.hostname, split.port or 80


def _payloads(
    base_url: str, requests: Sequence[Request], headers: Mapping[str, str] | None
) -> list[bytes]:
    common = {"User-Agent": "sluice-bench", "Accept": "application/json", **(headers or {})}
    netloc = urlsplit(base_url).netloc
    return [serialise(r, host=netloc, headers=common) for r in requests]


def _local_addrs(
    requests: Sequence[Request], sources: Sequence[str]
) -> dict[int, tuple[str, int] | None]:
    """Each sending client's source address for `create_connection` (None: the kernel's)."""
    clients = {r.client for r in requests}
    if not sources:
        return dict.fromkeys(clients)
    missing = sorted(c for c in clients if not 0 <= c < len(sources))
    if missing:
        raise ValueError(f"no source address for clients {missing[:5]} ({len(sources)} given)")
    return {c: (sources[c], 0) for c in clients}


async def run_open_loop(
    base_url: str,
    requests: Sequence[Request],
    offsets: Sequence[float],
    *,
    max_in_flight: int = 1000,
    timeout_s: float = 5.0,
    headers: Mapping[str, str] | None = None,
    sources: Sequence[str] = (),
) -> LoadResult:
    """Send `requests[i]` at `offsets[i]` seconds after the start; return every outcome.

    `sources[c]` is the local address client c's connections are opened from.
    """
    if len(requests) != len(offsets):
        raise ValueError(f"{len(requests)} requests for {len(offsets)} offsets")
    host, port = _target(base_url)
    payloads = _payloads(base_url, requests, headers)
    local_addrs = _local_addrs(requests, sources)

    loop = asyncio.get_running_loop()
    total = len(requests)
    outcomes: list[Outcome | None] = [None] * total
    idle: dict[int, deque[_Connection]] = {client: deque() for client in local_addrs}
    every: set[_Connection] = set()
    connecting: set[asyncio.Task[None]] = set()
    drained = loop.create_future()
    dispatching = True
    in_flight = peak = opened = 0

    def finish(flight: _Flight, status: int, error: str, body: bytes = b"") -> None:
        nonlocal in_flight
        if flight.done:
            return
        flight.done = True
        in_flight -= 1
        if flight.timer is not None:
            flight.timer.cancel()
        request = requests[flight.index]
        conn = flight.conn
        if conn is not None:
            if error or conn.closed:
                conn.close()
                every.discard(conn)
            else:
                idle[request.client].append(conn)
        outcomes[flight.index] = Outcome(
            kind=request.kind,
            status=status,
            latency_s=loop.time() - flight.scheduled,
            lag_s=flight.sent - flight.scheduled,
            error=error,
            tag=request.tag,
            body=body[:_BODY_LIMIT],
            client=request.client,
        )
        if not dispatching and in_flight == 0 and not drained.done():
            drained.set_result(None)

    def send(flight: _Flight, conn: _Connection) -> None:
        flight.conn = conn
        conn.send(
            payloads[flight.index],
            lambda status, error, body: finish(flight, status, error, body),
        )

    def timed_out(flight: _Flight) -> None:
        conn = flight.conn
        finish(flight, 0, TIMEOUT)
        if conn is not None:  # the answer may still come: never reuse this connection
            conn.close()
            every.discard(conn)

    async def connect_then_send(flight: _Flight) -> None:
        nonlocal opened
        local_addr = local_addrs[requests[flight.index].client]
        try:
            _, conn = await loop.create_connection(_Connection, host, port, local_addr=local_addr)
        except Exception as exc:  # refused, reset, out of ports: an outcome
            finish(flight, 0, type(exc).__name__)
            return
        opened += 1
        if flight.done:  # timed out while connecting
            conn.close()
            return
        every.add(conn)
        send(flight, conn)

    def dispatch(index: int, scheduled: float) -> None:
        nonlocal in_flight, peak
        now = loop.time()
        request = requests[index]
        if in_flight >= max_in_flight:
            outcomes[index] = Outcome(
                kind=request.kind,
                status=0,
                latency_s=0.0,
                lag_s=now - scheduled,
                error=NOT_SENT,
                tag=request.tag,
                client=request.client,
            )
            return
        in_flight += 1
        peak = max(peak, in_flight)
        flight = _Flight(index, scheduled, now)
        flight.timer = loop.call_at(scheduled + timeout_s, timed_out, flight)
        pool = idle[request.client]
        while pool:
            conn = pool.pop()  # most recently used: the least likely to be closed
            if not conn.closed:
                send(flight, conn)
                return
            every.discard(conn)
        task = loop.create_task(connect_then_send(flight))
        connecting.add(task)
        task.add_done_callback(connecting.discard)

    cpu_start = time.process_time()
    start = loop.time() + _LEAD_S
    i = 0
    try:
        while i < total:
            due = due_by(offsets, loop.time() - start)
            while i < due:
                dispatch(i, start + offsets[i])
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, start + offsets[i] - loop.time()))
        dispatching = False
        if in_flight:
            await drained
        if connecting:
            await asyncio.wait(set(connecting))
    finally:
        for task in connecting:
            task.cancel()
        for conn in every:
            conn.close()
    wall = loop.time() - start
    return LoadResult(
        outcomes=[o for o in outcomes if o is not None],
        wall_s=wall,
        cpu_s=time.process_time() - cpu_start,
        max_in_flight_seen=peak,
        connections_opened=opened,
    )


async def run_closed_loop(
    base_url: str,
    requests: Sequence[Request],
    *,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 5.0,
    headers: Mapping[str, str] | None = None,
    sources: Sequence[str] = (),
) -> LoadResult:
    """`concurrency` loops, each sending the next of `requests` as soon as its last is answered.

    For what an open loop cannot ask: how a client holding exactly N requests
    in flight is treated. Each loop keeps one keep-alive connection (from the
    sending client's source address); latency counts from the send, lag is 0.
    Stops after `duration_s`, or when `requests` run out.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    host, port = _target(base_url)
    payloads = _payloads(base_url, requests, headers)
    local_addrs = _local_addrs(requests, sources)
    loop = asyncio.get_running_loop()
    outcomes: list[Outcome] = []
    order = iter(range(len(requests)))
    opened = 0
    busy = peak = 0

    async def one_loop(end: float) -> None:
        nonlocal opened, busy, peak
        conn: _Connection | None = None
        try:
            while loop.time() < end and (index := next(order, None)) is not None:
                request = requests[index]
                sent = loop.time()
                status, error, body = 0, "", b""
                if conn is None or conn.closed:
                    try:
                        _, conn = await loop.create_connection(
                            _Connection, host, port, local_addr=local_addrs[request.client]
                        )
                        opened += 1
                    except Exception as exc:  # an outcome, like the open loop's
                        conn, error = None, type(exc).__name__
                if conn is not None:
                    answered: asyncio.Future[tuple[int, str, bytes]] = loop.create_future()

                    def done(
                        status: int,
                        error: str,
                        body: bytes,
                        answered: asyncio.Future[tuple[int, str, bytes]] = answered,
                    ) -> None:
                        if not answered.done():
                            answered.set_result((status, error, body))

                    busy += 1
                    peak = max(peak, busy)
                    conn.send(payloads[index], done)
                    try:
                        status, error, body = await asyncio.wait_for(answered, timeout_s)
                    except TimeoutError:
                        status, error = 0, TIMEOUT
                    busy -= 1
                    if error or conn.closed:
                        conn.close()
                        conn = None
                outcomes.append(
                    Outcome(
                        kind=request.kind,
                        status=status,
                        latency_s=loop.time() - sent,
                        lag_s=0.0,
                        error=error,
                        tag=request.tag,
                        body=body[:_BODY_LIMIT],
                        client=request.client,
                    )
                )
                if error and conn is None and status == 0:
                    await asyncio.sleep(0.01)  # a refused connect must not spin
        finally:
            if conn is not None:
                conn.close()

    cpu_start = time.process_time()
    start = loop.time()
    await asyncio.gather(*(one_loop(start + duration_s) for _ in range(concurrency)))
    return LoadResult(
        outcomes=outcomes,
        wall_s=loop.time() - start,
        cpu_s=time.process_time() - cpu_start,
        max_in_flight_seen=peak,
        connections_opened=opened,
    )


def _at_priority(idle: bool, work: Callable[[], T]) -> T:
    """`work()`, in a thread of its own scheduled SCHED_IDLE when `idle` (Linux: per thread).

    On this machine the clients share the servers' cores, as they would not in
    production. SCHED_IDLE runs the generator only on CPU the servers leave
    (the scheduler also counts a core that runs nothing else as idle when it
    places a waking server thread, which a high nice value does not); its
    lateness is measured and reported.
    """
    if not idle:
        return work()
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            results.append(work())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="load-generator")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def _runner() -> asyncio.Runner:
    """A fresh event loop (uvloop when installed)."""
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.Runner()


def _on_a_fresh_loop(run: Callable[[], Coroutine[Any, Any, LoadResult]], idle: bool) -> LoadResult:
    """`run()` on a fresh event loop (in an idle-priority thread when `idle`)."""

    def work() -> LoadResult:
        with _runner() as runner:
            return runner.run(run())

    return _at_priority(idle, work)


def run(
    base_url: str,
    requests: Sequence[Request],
    offsets: Sequence[float],
    *,
    max_in_flight: int = 1000,
    timeout_s: float = 5.0,
    headers: Mapping[str, str] | None = None,
    sources: Sequence[str] = (),
    idle: bool = False,
) -> LoadResult:
    """`run_open_loop` on a fresh event loop (idle priority when `idle`)."""
    return _on_a_fresh_loop(
        lambda: run_open_loop(
            base_url,
            requests,
            offsets,
            max_in_flight=max_in_flight,
            timeout_s=timeout_s,
            headers=headers,
            sources=sources,
        ),
        idle,
    )


def run_closed(
    base_url: str,
    requests: Sequence[Request],
    *,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 5.0,
    sources: Sequence[str] = (),
    idle: bool = False,
) -> LoadResult:
    """`run_closed_loop` on a fresh event loop (idle priority when `idle`)."""
    return _on_a_fresh_loop(
        lambda: run_closed_loop(
            base_url,
            requests,
            concurrency=concurrency,
            duration_s=duration_s,
            timeout_s=timeout_s,
            sources=sources,
        ),
        idle,
    )
