"""Fixtures for the reliability and security tests: stacks of their own.

Faults kill and restart processes, and the abuse tests exhaust rate limits,
so none of these tests touch the shared session stack (tests/conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg2
import pytest

from tests.stackctl import RunningStack, local_stack

FAULT_STACK_BASE = 27100
EDGE_STACK_BASE = 27200
# The edge stack's stand-in load balancer: its X-Forwarded-For names the client.
REAL_IP_BALANCER = "127.0.0.1/32"


def record(name: str, **figures: object) -> None:
    """Print a measured figure line; `pytest -s` shows them, docs/reliability.md keeps them."""
    text = ", ".join(
        f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in figures.items()
    )
    print(f"\nRELIABILITY {name}: {text}", flush=True)


def login(base_url: str, email: str, password: str) -> str:
    """A bearer token; waits out the login rate limit (429) the abuse tests trigger."""
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=base_url, timeout=10) as http:
        while True:
            response = http.post(
                "/api/v1/login/access-token", data={"username": email, "password": password}
            )
            if response.status_code != 429 or time.monotonic() > deadline:
                assert response.status_code == 200, response.text
                token: str = response.json()["access_token"]
                return token
            time.sleep(float(response.headers.get("Retry-After", "1")))


def signup(base_url: str, body: dict[str, object]) -> httpx.Response:
    """POST /users/signup, waiting out nginx's per-address signup limit (429)."""
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=base_url, timeout=10) as http:
        while True:
            response = http.post("/api/v1/users/signup", json=body)
            if response.status_code != 429 or time.monotonic() > deadline:
                return response
            time.sleep(float(response.headers.get("Retry-After", "1")))


def new_user(base_url: str, password: str = "correct-horse-9") -> tuple[dict[str, str], str]:
    """A fresh user (signed up through nginx) and a bearer token for it."""
    import uuid

    email = f"rel-{uuid.uuid4().hex[:12]}@example.com"
    response = signup(base_url, {"email": email, "password": password})
    assert response.status_code == 201, response.text
    return response.json(), login(base_url, email, password)


def committed_items(database_url: str, ids: list[str]) -> dict[str, str]:
    """id → title of the given items as PostgreSQL has them (direct, not via the app)."""
    if not ids:
        return {}
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id::text, title FROM items WHERE id = ANY(%s::uuid[])", (ids,))
        rows = dict(cur.fetchall())
    conn.close()
    return rows


def items_with_titles(database_url: str, titles: list[str]) -> set[str]:
    if not titles:
        return set()
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT title FROM items WHERE title = ANY(%s)", (titles,))
        found = {row[0] for row in cur.fetchall()}
    conn.close()
    return found


@pytest.fixture(scope="package")
def edge_stack() -> Iterator[RunningStack]:
    """A stack for the abuse and hardening tests (port base 27200).

    Started once for tests/reliability, stopped at the end. Its login rate
    limit is exhausted on purpose by the brute-force test, so it is never the
    shared session stack. It trusts X-Forwarded-For from 127.0.0.1 as if that
    were a load balancer (NGINX_REAL_IP_FROM), which the real-ip test uses;
    the other tests send none or come from other loopback addresses.
    """
    with local_stack(
        "reliability-edge", EDGE_STACK_BASE, NGINX_REAL_IP_FROM=REAL_IP_BALANCER
    ) as running:
        yield running
