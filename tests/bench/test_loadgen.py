"""The generator against a tiny in-process HTTP server: outcomes, not timings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bench.loadgen import Request, run_open_loop
from bench.schedule import uniform_offsets
from bench.stats import NOT_SENT, TIMEOUT, summarize


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
async def _server() -> AsyncIterator[str]:
    server = await asyncio.start_server(_handle, "127.0.0.1", 0)
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
