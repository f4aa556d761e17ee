"""Admission control: the worker's L request slots, one owner, and what may wait for them.

A pure ASGI middleware, so a refusal costs one small response and never
touches the threadpool or the database.

`AdmissionController` is the only thing that counts the worker's slots. Two
paths lead to one:

- nginx's connections reach the worker through the accept gate
  (service/server/gate.py), which takes a connection from the kernel's accept
  queue only when it can `reserve()` a slot for it, so every request nginx
  lets through either runs at once or waits in that queue, where it costs
  nothing. The connection hands its reservation to its first request
  (`RESERVATION`, set by the gate around the code that starts the request).
- Everything else (a second request on a kept-alive connection, a direct
  caller) `acquire()`s a slot and may wait in a bounded queue: at most Q, at
  most T, refused at once when the wait it can expect already exceeds T.

Before a request starts, its sojourn (time since nginx received it,
`X-Request-Start`) decides whether it is still worth running
(`SojournPolicy`): one that can no longer finish within the latency target
is refused, and so is one behind a standing queue, CoDel's signal (Nichols
and Jacobson, 2012): when even the quickest request of a whole interval
waited longer than the wait budget T, the queue is not a burst draining but
a backlog, and requests that waited longer than T are shed until one gets
through within it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Literal

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.error_handlers import error_response
from service.errors import Overloaded

Discipline = Literal["fifo", "lifo"]


class Reservation:
    """A slot the accept gate took for a connection, until its first request claims it."""

    __slots__ = ("_controller", "claimed", "ended")

    def __init__(self, controller: AdmissionController) -> None:
        self._controller = controller
        self.claimed = False
        self.ended = False

    def claim(self) -> bool:
        """The first request takes the slot over; later ones (keep-alive) get False."""
        if self.claimed or self.ended:
            return False
        self.claimed = True
        return True

    def end(self) -> None:
        """The connection is gone: a slot it never handed to a request is given back."""
        if self.ended:
            return
        self.ended = True
        if not self.claimed:
            self._controller.release()


# The reservation of the connection a request arrived on. The gate sets it
# while uvicorn parses that connection's bytes, which is when uvicorn creates
# the request's task, and a task copies the context it is created in.
RESERVATION: ContextVar[Reservation | None] = ContextVar("sluice_reservation", default=None)


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
        self,
        *,
        max_in_flight: int,
        queue_length: int,
        discipline: Discipline = "fifo",
        stall_after_s: float = 0.5,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.queue_length = queue_length
        self.discipline = discipline
        self.stall_after_s = stall_after_s
        # Slots held: by running requests and by connections not yet started.
        self.in_flight = 0
        self.mean_hold_s: float | None = None
        # When the last free slot was taken, or a slot last changed hands while
        # every one was held: how long the worker has been full without moving.
        self.full_since = time.monotonic()
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Called whenever a slot may have freed (the accept gate re-arms).
        self.on_release: Callable[[], None] | None = None
        metrics.ADMISSION_LIMIT.labels("in_flight").set(max_in_flight)
        metrics.ADMISSION_LIMIT.labels("queue").set(queue_length)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def has_room(self) -> bool:
        """A slot is free and nobody queues for it."""
        return self.in_flight < self.max_in_flight and not self._waiters

    @property
    def stalled(self) -> bool:
        """Every slot held, and none given back for `stall_after_s`: nothing is moving.

        Typically a stuck database: what waits for a slot now would wait until
        the stall ends, so the gate lets it in to be refused at once instead.
        """
        return (
            self.in_flight >= self.max_in_flight
            and time.monotonic() - self.full_since > self.stall_after_s
        )

    def reserve(self) -> Reservation | None:
        """A slot for a connection about to be accepted, or None when there is none."""
        if not self.has_room:
            return None
        self._take()
        return Reservation(self)

    def _take(self) -> None:
        self.in_flight += 1
        if self.in_flight >= self.max_in_flight:
            self.full_since = time.monotonic()
        self._publish()

    async def acquire(self, timeout: float) -> str | None:
        """Take a slot; return None when admitted or the reason for refusing."""
        if self.has_room:
            self._take()
            metrics.ADMISSION_WAIT.observe(0.0)
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
                self.full_since = time.monotonic()  # still full, but moving
                self._publish()
                return
        self.in_flight -= 1
        self._publish()
        if self.on_release is not None:
            self.on_release()

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        self._publish()
        if self.on_release is not None and self.has_room:
            self.on_release()

    def _publish(self) -> None:
        metrics.IN_FLIGHT.set(self.in_flight)
        metrics.QUEUE_DEPTH.set(len(self._waiters))


class SojournPolicy:
    """Whether a request that waited `sojourn` seconds before its slot should still run.

    Two rules, both about time already spent:

    - **late**: its wait alone has used up the latency target, so it cannot
      be answered in time whatever it costs: refuse it now rather than spend
      a slot on an answer that is late already. (A prediction from the mean
      hold time would refuse a fresh request whenever slow endpoints, such as
      password hashing, raise the mean: only time already spent is certain.)
    - **standing queue** (CoDel): the smallest sojourn seen over the last
      `interval_s` exceeded the wait budget T, so the queue has not drained
      within T for a whole interval. While it stands, requests that waited
      longer than T are refused; the first one within T ends it.

    Bursts that drain within the budget are never touched, so below capacity
    nothing is refused; only a backlog the machine cannot work off is.
    """

    def __init__(self, *, target_s: float, budget_s: float, interval_s: float) -> None:
        self.target_s = target_s
        self.budget_s = budget_s
        self.interval_s = interval_s
        self.standing = False
        self._interval_end: float | None = None
        self._interval_min = float("inf")

    def refuse(self, sojourn: float, *, now: float) -> str | None:
        """The reason to refuse this request, or None to run it."""
        self._observe(sojourn, now)
        if sojourn >= self.target_s:
            return "late"
        if self.standing and sojourn > self.budget_s:
            return "standing_queue"
        return None

    def _observe(self, sojourn: float, now: float) -> None:
        if sojourn <= self.budget_s:
            self.standing = False
        self._interval_min = min(self._interval_min, sojourn)
        if self._interval_end is None:
            self._interval_end = now + self.interval_s
        elif now >= self._interval_end:
            self.standing = self._interval_min > self.budget_s
            self._interval_min = sojourn
            self._interval_end = now + self.interval_s
        metrics.STANDING_QUEUE.set(1 if self.standing else 0)


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


# FastAPI turns any other exception raised while it reads a body into a 400.
_BODY_TIMEOUT = HTTPException(
    status_code=408,
    detail="The request body did not arrive in time; the request was not applied.",
    headers={"Connection": "close"},
)


def _body_within(receive: Receive, seconds: float) -> Receive:
    """`receive`, raising a 408 once the body has taken `seconds` in all.

    nginx reads every body before it connects, so this only bounds callers
    that reach a worker directly: a body trickled a byte at a time would
    otherwise hold its slot for as long as the sender liked.
    """
    deadline = time.monotonic() + seconds
    complete = False

    async def receive_in_time() -> Message:
        nonlocal complete
        if complete:  # what comes after the body (a disconnect) has no deadline
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise _BODY_TIMEOUT from None
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return receive_in_time


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        controller: AdmissionController,
        sojourn: SojournPolicy,
        queue_wait_s: float,
        deadline_s: float,
        body_timeout_s: float,
        retry_after_s: int,
        bypass_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.controller = controller
        self.sojourn = sojourn
        self.queue_wait_s = queue_wait_s
        self.deadline_s = deadline_s
        self.body_timeout_s = body_timeout_s
        self.retry_after_s = retry_after_s
        self.bypass_paths = bypass_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reservation = RESERVATION.get()
        reserved = reservation is not None and reservation.claim()
        if scope["path"] in self.bypass_paths:
            if reserved:
                self.controller.release()
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        queued = request_queue_time(scope["headers"], time.time())
        if queued is not None:
            metrics.REQUEST_QUEUE_TIME.observe(queued)
        remaining = self.deadline_s - (queued or 0.0)
        if remaining <= 0:
            reason: str | None = "deadline_expired_upstream"
        elif reserved:
            reason = None
            metrics.ADMISSION_WAIT.observe(0.0)  # a slot was waiting for it
        elif self.controller.stalled:
            reason = "stalled"
        else:
            reason = await self.controller.acquire(min(self.queue_wait_s, remaining))
        if reason is None:
            waited = (queued or 0.0) + (time.monotonic() - arrived)
            reason = self.sojourn.refuse(waited, now=time.monotonic())
            if reason is not None:
                self.controller.release()
        elif reserved:
            self.controller.release()
        if reason is not None:
            metrics.SHED.labels("app", reason).inc()
            response = error_response(Overloaded(reason=reason), retry_after_s=self.retry_after_s)
            await response(scope, receive, send)
            return
        metrics.ADMITTED.inc()
        # The remaining deadline travels with the request to bound its SQL.
        scope.setdefault("state", {})["deadline"] = time.monotonic() + remaining
        started = time.perf_counter()
        try:
            await self.app(scope, _body_within(receive, self.body_timeout_s), send)
        finally:
            self.controller.record_hold(time.perf_counter() - started)
            self.controller.release()
