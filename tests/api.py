"""A small client for Sluice's API, used by tests and the benchmark seeding."""

from __future__ import annotations

import uuid
from typing import Any

import httpx


class Api:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def signup(self, email: str | None = None, password: str = "correct-horse-9") -> dict[str, Any]:
        email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
        response = self.http.post(
            "/api/v1/users/signup", json={"email": email, "password": password}
        )
        assert response.status_code == 201, response.text
        return {**response.json(), "password": password}

    def login(self, email: str, password: str) -> str:
        response = self.http.post(
            "/api/v1/login/access-token", data={"username": email, "password": password}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def new_user(self) -> tuple[dict[str, Any], dict[str, str]]:
        """A fresh user and the headers that authenticate as them."""
        user = self.signup()
        token = self.login(user["email"], user["password"])
        return user, {"Authorization": f"Bearer {token}"}
