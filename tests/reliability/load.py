"""Steady load from a background thread, recording the outcome of every request.

A fault test starts a `Load`, breaks something, repairs it, stops the load and
then judges the outcomes: how many failed and how, how long the longest took,
when the first and last failures happened, and whether every acknowledged
write is in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

# Body fragments that would mean an error leaked internals.
LEAK_MARKERS = ("traceback", "sqlalchemy", "psycopg", "select ", "insert ", 'file "')


@dataclass(frozen=True)
class Outcome:
    op: str  # "write", "read" or "health"
    start: float  # time.monotonic() when sent
    elapsed: float  # seconds until the response (or the error)
    status: int | None  # None: no HTTP response (connection error, client timeout)
    error: str = ""
    reason: str = ""  # the JSON body's "reason" on an error response
    title: str = ""  # writes: the unique title sent
    item_id: str = ""  # writes: the id acknowledged by a 201
    body: str = ""  # error responses: the start of the body

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status < 400

    @property
    def end(self) -> float:
        return self.start + self.elapsed


@dataclass
class Results:
    outcomes: list[Outcome] = field(default_factory=list)

    def of(self, op: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.op == op]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def acknowledged(self) -> dict[str, str]:
        """item id → title of every write answered 201."""
        return {o.item_id: o.title for o in self.outcomes if o.op == "write" and o.item_id}

    def statuses(self, outcomes: Sequence[Outcome] | None = None) -> dict[str, int]:
        counts = Counter(
            str(o.status) if o.status is not None else f"error:{o.error}"
            for o in (self.outcomes if outcomes is None else outcomes)
        )
        return dict(sorted(counts.items()))

    def max_latency(self, outcomes: Sequence[Outcome] | None = None) -> float:
        return max(
            (o.elapsed for o in (self.outcomes if outcomes is None else outcomes)), default=0
        )

    def leaks(self) -> list[Outcome]:
        return [o for o in self.failures if any(m in o.body.lower() for m in LEAK_MARKERS)]

    def summary(self) -> str:
        n = len(self.outcomes)
        return (
            f"{n} requests, {len(self.failures)} failed, statuses {self.statuses()}, "
            f"max latency {self.max_latency():.2f}s"
        )


class Load:
    """`clients` concurrent clients, each sending requests back to back.

    Ops cycle through `mix` (e.g. ("write", "read", "health")); each client
    pauses `pause_s` between requests so the load is steady rather than
    saturating unless asked to. Every request has a client-side timeout, so
    a hang shows up as an outcome with status None, never as a stuck test.
    """

    def __init__(
        self,
        base_url: str,
        *,
        tokens: Sequence[str],
        clients: int = 8,
        mix: Sequence[str] = ("write", "read", "health"),
        pause_s: float = 0.01,
        timeout_s: float = 15.0,
        keepalive: bool = True,
    ) -> None:
        self.base_url = base_url
        self.tokens = list(tokens)
        self.clients = clients
        self.mix = list(mix)
        self.pause_s = pause_s
        self.timeout_s = timeout_s
        self.keepalive = keepalive
        self.results = Results()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def stop(self) -> Results:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 10)
            assert not self._thread.is_alive(), "load generator did not stop"
            self._thread = None
        if self._error is not None:
            raise RuntimeError("load generator failed") from self._error
        return self.results

    def count(self) -> int:
        return len(self.results.outcomes)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by stop()
            self._error = exc

    async def _main(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, force_close=not self.keepalive, enable_cleanup_closed=False
        )
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(
            self.base_url, connector=connector, timeout=timeout
        ) as http:
            await asyncio.gather(*(self._client(http, n) for n in range(self.clients)))

    async def _client(self, http: aiohttp.ClientSession, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[n % len(self.tokens)]}"}
        step = n
        while not self._stop.is_set():
            op = self.mix[step % len(self.mix)]
            step += 1
            self.results.outcomes.append(await self._one(http, op, headers))
            if self.pause_s:
                await asyncio.sleep(self.pause_s)

    async def _one(self, http: aiohttp.ClientSession, op: str, headers: dict[str, str]) -> Outcome:
        title = ""
        if op == "write":
            title = f"load-{uuid.uuid4().hex}"
            request = http.post("/api/v1/items/", json={"title": title}, headers=headers)
        elif op == "read":
            request = http.get("/api/v1/items/?limit=5", headers=headers)
        elif op == "me":
            request = http.get("/api/v1/users/me", headers=headers)
        else:
            request = http.get("/healthz")
        start = time.monotonic()
        try:
            async with request as response:
                raw = await response.read()
                elapsed = time.monotonic() - start
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Outcome(
                op, start, time.monotonic() - start, None, error=type(exc).__name__, title=title
            )
        text = raw.decode(errors="replace")
        item_id = reason = body = ""
        if response.status == 201 and op == "write":
            item_id = _json(raw).get("id", "")
        elif response.status >= 400:
            reason = str(_json(raw).get("reason", ""))
            body = text[:500]
        return Outcome(
            op,
            start,
            elapsed,
            response.status,
            reason=reason,
            title=title,
            item_id=item_id,
            body=body,
        )


def _json(raw: bytes) -> dict[str, str]:
    with contextlib.suppress(ValueError):
        value = json.loads(raw)
        if isinstance(value, dict):
            return value
    return {}
