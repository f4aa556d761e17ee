"""Concurrent signups with one email: the database decides, and the loser gets a 409."""

from __future__ import annotations

import threading
import uuid

import httpx
import psycopg2

from tests.stackctl import RunningStack

CONCURRENT = 8
ROUNDS = 3


def _signup_all_at_once(url: str, email: str, round_: int) -> list[httpx.Response]:
    """CONCURRENT signups at once, each from an address of its own (nginx limits
    signups per address, which would otherwise decide instead of the database)."""
    barrier = threading.Barrier(CONCURRENT)
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        transport = httpx.HTTPTransport(local_address=f"127.0.6.{round_ * CONCURRENT + n + 1}")
        with httpx.Client(base_url=url, timeout=15.0, transport=transport) as http:
            barrier.wait()
            response = http.post(
                "/api/v1/users/signup", json={"email": email, "password": "correct-horse-9"}
            )
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return responses


def test_concurrent_signups_with_one_email_create_one_user(stack: RunningStack) -> None:
    for round_ in range(ROUNDS):
        email = f"race-{uuid.uuid4().hex[:12]}@example.com"
        responses = _signup_all_at_once(stack.url, email, round_)
        statuses = sorted(r.status_code for r in responses)
        assert len(responses) == CONCURRENT
        assert statuses.count(201) == 1, statuses
        for response in responses:
            if response.status_code == 201:
                continue
            # Only "already exists", or an honest overload refusal: never a 500.
            assert response.status_code in (409, 503), (statuses, response.text)
            assert response.json()["reason"] in (
                "conflict",
                "connection_limit",  # nginx: the app's cap
                "queue_full",
                "queue_timeout",
                "queue_wait_predicted",
                "late",  # waited past the latency target behind the other hashes
                "standing_queue",
                "stalled",
                "hashing_busy",
            ), response.text
        if 409 not in statuses:
            # Every loser was refused before hashing; retried, as Retry-After
            # says, each finds the winner's row and gets the 409 itself.
            retried = httpx.post(
                f"{stack.url}/api/v1/users/signup",
                json={"email": email, "password": "correct-horse-9"},
                timeout=15.0,
            )
            statuses.append(retried.status_code)
        assert 409 in statuses, statuses
        with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM users WHERE email = %s", (email,))
            assert cur.fetchone() == (1,)
