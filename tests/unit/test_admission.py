"""Admission control on its own event loop: slots, the bounded queue, the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from fastapi.testclient import TestClient

from service.admission import AdmissionController, SojournPolicy, request_queue_time

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_admits_up_to_the_limit_then_queues_then_refuses() -> None:
    async def scenario() -> list[str | None]:
        controller = AdmissionController(max_in_flight=2, queue_length=1)
        first = await controller.acquire(0.05)
        second = await controller.acquire(0.05)
        waiting = asyncio.ensure_future(controller.acquire(1.0))
        await asyncio.sleep(0)
        assert controller.queued == 1
        overflow = await controller.acquire(1.0)  # queue of 1 is full
        controller.release()  # hands the slot straight to the waiter
        handed = await waiting
        assert controller.in_flight == 2 and controller.queued == 0
        return [first, second, overflow, handed]

    assert _run(scenario()) == [None, None, "queue_full", None]


def test_a_wait_longer_than_t_is_refused_and_leaves_the_queue() -> None:
    async def scenario() -> tuple[str | None, float, int]:
        controller = AdmissionController(max_in_flight=1, queue_length=5)
        await controller.acquire(0.05)
        start = time.perf_counter()
        reason = await controller.acquire(0.05)
        return reason, time.perf_counter() - start, controller.queued

    reason, waited, queued = _run(scenario())
    assert reason == "queue_timeout"
    assert 0.04 < waited < 1.0
    assert queued == 0


def test_fifo_and_lifo_order() -> None:
    async def order(discipline: Literal["fifo", "lifo"]) -> list[int]:
        controller = AdmissionController(
            max_in_flight=1,
            queue_length=3,
            discipline=discipline,
        )
        await controller.acquire(1)
        served: list[int] = []

        async def waiter(n: int) -> None:
            assert await controller.acquire(5) is None
            served.append(n)
            controller.release()

        tasks = []
        for n in range(3):
            tasks.append(asyncio.ensure_future(waiter(n)))
            await asyncio.sleep(0)
        controller.release()
        await asyncio.gather(*tasks)
        return served

    assert _run(order("fifo")) == [0, 1, 2]
    assert _run(order("lifo")) == [2, 1, 0]


def test_a_cancelled_waiter_gives_back_nothing_it_did_not_get() -> None:
    async def scenario() -> tuple[int, int]:
        controller = AdmissionController(max_in_flight=1, queue_length=2)
        await controller.acquire(1)
        task = asyncio.ensure_future(controller.acquire(5))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        controller.release()
        return controller.in_flight, controller.queued

    assert _run(scenario()) == (0, 0)


def test_queue_time_from_nginx_header() -> None:
    now = 1_700_000_010.5
    assert request_queue_time([(b"x-request-start", b"t=1700000010.250")], now) == 0.25
    assert request_queue_time([(b"x-request-start", b"garbage")], now) is None
    assert request_queue_time([], now) is None
    assert request_queue_time([(b"x-request-start", b"t=1700000011.0")], now) == 0.0


def test_a_request_that_spent_its_deadline_upstream_is_refused_at_once(
    client: TestClient,
) -> None:
    stale = f"t={time.time() - 60:.3f}"
    response = client.get("/api/v1/items/", headers={"X-Request-Start": stale})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["reason"] == "deadline_expired_upstream"
    fresh = client.get("/api/v1/items/", headers={"X-Request-Start": f"t={time.time():.3f}"})
    assert fresh.status_code == 401  # admitted, then refused for lack of a token
    assert client.get("/healthz", headers={"X-Request-Start": stale}).status_code == 200


def test_a_wait_that_cannot_end_in_time_is_refused_at_once() -> None:
    async def scenario() -> tuple[str | None, float, str | None]:
        controller = AdmissionController(max_in_flight=2, queue_length=100)
        for _ in range(20):
            controller.record_hold(0.1)  # requests hold a slot ~100 ms
        await controller.acquire(1)
        await controller.acquire(1)
        # First in line: expected 1 x 0.1 / 2 = 50 ms, within a 200 ms limit.
        waiting = asyncio.ensure_future(controller.acquire(0.2))
        await asyncio.sleep(0)
        # Fifth in line would expect 250 ms: refused now, not after 200 ms.
        queued = [asyncio.ensure_future(controller.acquire(0.2)) for _ in range(3)]
        await asyncio.sleep(0)
        start = time.perf_counter()
        refused = await controller.acquire(0.2)
        elapsed = time.perf_counter() - start
        controller.release()
        admitted = await waiting
        for task in queued:
            task.cancel()
        return admitted, elapsed, refused

    admitted, elapsed, refused = _run(scenario())
    assert admitted is None
    assert refused == "queue_wait_predicted"
    assert elapsed < 0.05


def test_a_request_that_can_no_longer_finish_in_time_is_refused_before_it_runs(
    client: TestClient,
) -> None:
    """Waited 1 s in front of the worker against a 250 ms target: refused, not run."""
    late = f"t={time.time() - 1:.3f}"
    response = client.get("/api/v1/items/", headers={"X-Request-Start": late})
    assert response.status_code == 503
    assert response.json()["reason"] == "late"
    assert response.headers["retry-after"] == "1"


def test_a_reservation_is_a_slot_until_claimed_or_ended() -> None:
    async def scenario() -> list[object]:
        controller = AdmissionController(max_in_flight=2, queue_length=1)
        freed: list[int] = []
        controller.on_release = lambda: freed.append(controller.in_flight)
        first, second = controller.reserve(), controller.reserve()
        assert first is not None and second is not None
        full = controller.reserve()  # both slots held by connections
        queued = asyncio.ensure_future(controller.acquire(1.0))
        await asyncio.sleep(0)
        assert controller.queued == 1 and not controller.has_room
        assert first.claim() and not first.claim()  # the first request takes it, once
        second.end()  # a connection that sent nothing: its slot goes to the waiter
        got = await queued
        first.end()  # claimed: ending the connection gives nothing back
        return [full, got, controller.in_flight, freed]

    assert _run(scenario()) == [None, None, 2, []]


def test_bursts_that_drain_within_the_budget_are_never_shed() -> None:
    policy = SojournPolicy(target_s=0.25, budget_s=0.125, interval_s=0.5)
    now = 100.0
    verdicts = []
    for i in range(200):  # 4 s of a queue that keeps dipping back under T
        sojourn = 0.2 if i % 10 else 0.01
        verdicts.append(policy.refuse(sojourn, now=now))
        now += 0.02
    assert verdicts == [None] * 200


def test_a_standing_queue_is_shed_down_to_the_budget() -> None:
    """Every request of an interval waited over T: shed what waited over T, until one did not."""
    policy = SojournPolicy(target_s=0.25, budget_s=0.125, interval_s=0.5)
    now = 100.0
    verdicts = []
    for _ in range(60):  # 1.2 s in which every request waited 150 ms
        verdicts.append(policy.refuse(0.15, now=now))
        now += 0.02
    # The first interval only observes; from the next one on, the queue stands.
    assert verdicts[:25] == [None] * 25
    assert "standing_queue" in verdicts[26:]
    assert policy.refuse(0.05, now=now) is None  # within T: it ends
    assert policy.refuse(0.15, now=now + 0.01) is None
    assert policy.refuse(0.3, now=now + 0.02) == "late"


def test_only_time_already_spent_makes_a_request_late() -> None:
    policy = SojournPolicy(target_s=0.25, budget_s=0.125, interval_s=0.5)
    assert policy.refuse(0.0, now=1.0) is None  # however slow recent requests were
    assert policy.refuse(0.24, now=1.1) is None
    assert policy.refuse(0.25, now=1.2) == "late"


def test_a_worker_that_was_idle_is_not_stalled_the_moment_it_fills() -> None:
    """Stalled means full and not moving for the interval, not "no release for a while"."""

    async def scenario() -> tuple[bool, bool]:
        controller = AdmissionController(max_in_flight=2, queue_length=1, stall_after_s=0.05)
        await asyncio.sleep(0.1)  # idle for longer than the interval
        first, second = controller.reserve(), controller.reserve()
        assert first is not None and second is not None
        just_full = controller.stalled
        await asyncio.sleep(0.1)  # full, nothing given back
        return just_full, controller.stalled

    assert _run(scenario()) == (False, True)
