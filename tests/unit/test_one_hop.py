"""One threadpool hop per request (service/api/routing.py), counted on the real app."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

PASSWORD = "correct-horse-9"


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every hand-over to a worker thread, by the function it ran (anyio's, which
    starlette's run_in_threadpool and FastAPI use)."""
    seen: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(func, "__qualname__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    yield seen


def _token(client: TestClient) -> dict[str, str]:
    email = f"hops-{uuid.uuid4().hex[:10]}@example.com"
    assert client.post(
        "/api/v1/users/signup", json={"email": email, "password": PASSWORD}
    ).is_success
    login = client.post(
        "/api/v1/login/access-token", data={"username": email, "password": PASSWORD}
    )
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/items/?limit=5", None),
        ("POST", "/api/v1/items/", {"title": "one hop"}),
        ("GET", "/api/v1/users/me", None),
    ],
)
def test_an_authenticated_request_makes_one_hop(
    client: TestClient, hops: list[str], method: str, path: str, body: dict[str, str] | None
) -> None:
    headers = _token(client)
    hops.clear()
    response = client.request(method, path, headers=headers, json=body)
    assert response.is_success, response.text
    assert len(hops) == 1, hops


def test_a_deleted_users_token_is_still_refused_in_that_one_hop(
    client: TestClient, hops: list[str]
) -> None:
    """The user is loaded in the endpoint's thread, and checked there, before the endpoint."""
    headers = _token(client)
    assert client.delete("/api/v1/users/me", headers=headers).status_code == 200
    hops.clear()
    response = client.get("/api/v1/items/", headers=headers)
    assert response.status_code == 401
    assert response.json()["reason"] == "unknown_user"
    assert len(hops) == 1, hops
