"""The generator against a tiny in-process HTTP server: outcomes, not timings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from bench.loadgen import LoadResult, Request, run_closed_loop, run_open_loop
from bench.schedule import uniform_offsets
from bench.stats import NOT_SENT, TIMEOUT, summarize
from bench.workload import client_addresses

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: /ok -> 200, /busy -> 503, /hang -> never answers."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            length = next(
                (
                    int(line.split(":")[1])
                    for line in lines
                    if line.lower().startswith("content-length")
                ),
                0,
            )
            if length:
                await reader.readexactly(length)
            path = lines[0].split()[1]
            if path == "/hang":
                await asyncio.sleep(60)
            if path == "/busy":
                status, body = "503 Service Unavailable", b'{"detail":"x","reason":"queue_full"}'
            else:
                status, body = "200 OK", b'{"ok":true}'
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                "Content-Type: application/json\r\n\r\n".encode()
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _server(handle: Handler = _handle) -> AsyncIterator[str]:
    """A real server on a free loopback port, answering with `handle`; its URL."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def test_open_loop_run_records_every_scheduled_request() -> None:
    async def scenario() -> None:
        async with _server() as url:
            offsets = uniform_offsets(200, 0.5)
            requests = [
                Request("GET", "/busy", "get")
                if i % 10 == 0
                else Request("POST", "/ok", "post", body=b"{}", tag=f"t{i}")
                for i in range(len(offsets))
            ]
            result = await run_open_loop(url, requests, offsets, max_in_flight=50, timeout_s=5)
        s = summarize(result.outcomes, offered_rps=200, duration_s=0.5)
        assert s.scheduled == 100
        assert s.ok == 90
        assert {code: st.count for code, st in s.rejected.items()} == {503: 10}
        assert {key: st.count for key, st in s.reasons.items()} == {"503 app:queue_full": 10}
        assert s.timeouts == s.not_sent == 0
        assert sorted(o.tag for o in result.outcomes if o.ok) == sorted(
            f"t{i}" for i in range(100) if i % 10
        )
        assert all(o.latency_s >= o.lag_s for o in result.outcomes)
        # keep-alive: far fewer connections than requests at this rate
        assert result.connections_opened <= result.max_in_flight_seen <= 50

    asyncio.run(scenario())


def test_full_cap_counts_not_sent_and_slow_answers_time_out() -> None:
    async def scenario() -> None:
        async with _server() as url:
            offsets = uniform_offsets(100, 0.1)  # 10 requests within 0.1 s
            requests = [Request("GET", "/hang", "get")] * len(offsets)
            # The timeout (2 s) outlasts the schedule, so the cap stays full.
            result = await run_open_loop(url, requests, offsets, max_in_flight=2, timeout_s=2)
        errors = [o.error for o in result.outcomes]
        assert errors.count(TIMEOUT) == 2
        assert errors.count(NOT_SENT) == 8
        assert result.max_in_flight_seen == 2

    asyncio.run(scenario())


class _Recorder:
    """A keep-alive HTTP/1.1 server that records, per request, the peer it came from."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.peers: dict[str, str] = {}  # request path -> peer address
        self.connections: list[str] = []  # peer address of each accepted connection
        self.in_flight = 0
        self.peak = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        self.connections.append(peer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.decode().split()[1]
                self.peers[path] = peer
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                await asyncio.sleep(self.delay_s)
                self.in_flight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def test_each_client_sends_from_its_own_address_over_its_own_connections() -> None:
    recorder = _Recorder()
    sources = client_addresses(3)
    assert sources == ["127.0.0.10", "127.0.0.11", "127.0.0.12"]

    async def scenario() -> LoadResult:
        async with _server(recorder.handle) as url:
            offsets = uniform_offsets(300, 0.5)
            requests = [Request("GET", f"/r{i}", "get", client=i % 3) for i in range(150)]
            return await run_open_loop(url, requests, offsets, timeout_s=5, sources=sources)

    result = asyncio.run(scenario())
    assert sum(o.ok for o in result.outcomes) == 150
    # The server saw every request come from its client's address ...
    assert recorder.peers == {f"/r{i}": sources[i % 3] for i in range(150)}
    assert {o.client for o in result.outcomes} == {0, 1, 2}
    # ... over connections of that client's own pool, kept alive: a connection is
    # never handed from one client to another, and far fewer were opened than sent.
    assert set(recorder.connections) == set(sources)
    assert len(recorder.connections) < 150 / 3


def test_a_client_without_a_source_address_is_refused_before_sending() -> None:
    async def scenario() -> None:
        requests = [Request("GET", "/", "get", client=5)]
        await run_open_loop("http://127.0.0.1:9", requests, [0.0], sources=["127.0.0.10"])

    with pytest.raises(ValueError, match="no source address for clients"):
        asyncio.run(scenario())


def test_closed_loop_keeps_exactly_n_requests_in_flight_from_one_address() -> None:
    recorder = _Recorder(delay_s=0.02)

    async def scenario() -> LoadResult:
        async with _server(recorder.handle) as url:
            requests = [Request("GET", f"/c{i}", "get") for i in range(10_000)]
            return await run_closed_loop(
                url, requests, concurrency=4, duration_s=0.5, sources=["127.0.0.10"]
            )

    result = asyncio.run(scenario())
    assert recorder.peak == 4  # the server saw four at once, never more
    assert result.max_in_flight_seen == 4
    assert set(recorder.peers.values()) == {"127.0.0.10"}
    assert result.connections_opened == 4  # one keep-alive connection per loop
    # About 0.5 s / 20 ms = 25 rounds of 4; the loop stopped at its duration.
    assert 40 <= len(result.outcomes) <= 120
    assert all(o.ok and o.lag_s == 0.0 for o in result.outcomes)
