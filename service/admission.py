"""Admission control: at most L requests in flight per worker, Q waiting for at most T.

A pure ASGI middleware, so a refusal costs one small response and never
touches the threadpool or the database. Requests that already spent their
whole deadline in the queues in front of the worker (nginx's X-Request-Start)
are refused at once: their client has most likely given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Iterable
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics

Discipline = Literal["fifo", "lifo"]


class AdmissionController:
    """Per-worker slots and a bounded wait queue, on the worker's event loop.

    A request that would have to queue is refused at once when the wait it can
    expect (its place in the queue times the recent mean slot hold time,
    divided by the slots) already exceeds its wait limit: waiting T only to be
    refused anyway would make refusals slow and hold memory. The mean adapts to
    the service time actually observed, so a wrong SLUICE_SERVICE_TIME_MS
    cannot make refusals slow.
    """

    # Weight of the newest hold time in the moving average.
    EWMA_ALPHA = 0.1

    def __init__(
        self, *, max_in_flight: int, queue_length: int, discipline: Discipline = "fifo"
    ) -> None:
        self.max_in_flight = max_in_flight
        self.queue_length = queue_length
        self.discipline = discipline
        self.in_flight = 0
        self.mean_hold_s: float | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        metrics.ADMISSION_LIMIT.labels("in_flight").set(max_in_flight)
        metrics.ADMISSION_LIMIT.labels("queue").set(queue_length)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self, timeout: float) -> str | None:
        """Take a slot; return None when admitted or the reason for refusing."""
        if self.in_flight < self.max_in_flight and not self._waiters:
            self._admit(0.0)
            return None
        if len(self._waiters) >= self.queue_length or timeout <= 0:
            return "queue_full"
        if self.expected_wait(len(self._waiters) + 1) > timeout:
            return "queue_wait_predicted"
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._publish()
        start = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over as the timer fired: keep it.
                metrics.ADMISSION_WAIT.observe(time.perf_counter() - start)
                return None
            self._forget(waiter)
            return "queue_timeout"
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                self._forget(waiter)
            raise
        metrics.ADMISSION_WAIT.observe(time.perf_counter() - start)
        return None

    def expected_wait(self, position: int) -> float:
        """Seconds until a request at `position` in the queue gets a slot, from the mean."""
        if self.mean_hold_s is None:
            return 0.0
        return position * self.mean_hold_s / self.max_in_flight

    def record_hold(self, seconds: float) -> None:
        if self.mean_hold_s is None:
            self.mean_hold_s = seconds
        else:
            self.mean_hold_s += self.EWMA_ALPHA * (seconds - self.mean_hold_s)

    def release(self) -> None:
        """Free a slot, handing it straight to a waiter if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft() if self.discipline == "fifo" else self._waiters.pop()
            if not waiter.done():
                waiter.set_result(None)
                self._publish()
                return
        self.in_flight -= 1
        self._publish()

    def _admit(self, waited: float) -> None:
        self.in_flight += 1
        metrics.ADMISSION_WAIT.observe(waited)
        self._publish()

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        self._publish()

    def _publish(self) -> None:
        metrics.IN_FLIGHT.set(self.in_flight)
        metrics.QUEUE_DEPTH.set(len(self._waiters))


def request_queue_time(headers: Iterable[tuple[bytes, bytes]], now: float) -> float | None:
    """Seconds since nginx received the request, from `X-Request-Start: t=<epoch>`."""
    for name, value in headers:
        if name == b"x-request-start":
            raw = value.decode("latin-1").strip()
            if raw.startswith("t="):
                raw = raw[2:]
            try:
                return max(0.0, now - float(raw))
            except ValueError:
                return None
    return None


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        controller: AdmissionController,
        queue_wait_s: float,
        deadline_s: float,
        retry_after_s: int,
        bypass_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.controller = controller
        self.queue_wait_s = queue_wait_s
        self.deadline_s = deadline_s
        self.retry_after = str(retry_after_s).encode()
        self.bypass_paths = bypass_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.bypass_paths:
            await self.app(scope, receive, send)
            return
        queued = request_queue_time(scope["headers"], time.time())
        if queued is not None:
            metrics.REQUEST_QUEUE_TIME.observe(queued)
        remaining = self.deadline_s - (queued or 0.0)
        if remaining <= 0:
            await self._refuse(send, "deadline_expired_upstream")
            return
        reason = await self.controller.acquire(min(self.queue_wait_s, remaining))
        if reason is not None:
            await self._refuse(send, reason)
            return
        metrics.ADMITTED.inc()
        # The remaining deadline travels with the request to bound its SQL.
        scope.setdefault("state", {})["deadline"] = time.monotonic() + remaining
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.controller.record_hold(time.perf_counter() - started)
            self.controller.release()

    async def _refuse(self, send: Send, reason: str) -> None:
        metrics.SHED.labels("app", reason).inc()
        body = json.dumps(
            {
                "detail": "Service overloaded; the request was not applied. "
                "Retry after the Retry-After delay.",
                "reason": reason,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", self.retry_after),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
