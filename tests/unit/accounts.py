"""Accounts for the in-process API tests: signed up, logged in, or a superuser."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.models import User
from service.passwords import hash_password

PASSWORD = "correct-horse-battery"
Headers = dict[str, str]


def login(client: TestClient, email: str, password: str = PASSWORD) -> Headers:
    response = client.post(
        "/api/v1/login/access-token", data={"username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def signup(client: TestClient, email: str | None = None) -> tuple[Headers, str]:
    """A signed-up user: (auth headers, id)."""
    email = email or f"u-{uuid.uuid4().hex[:10]}@example.com"
    response = client.post("/api/v1/users/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return login(client, email), response.json()["id"]


def superuser(client: TestClient, session: Session) -> tuple[Headers, str]:
    """A superuser, inserted as the migration's bootstrap would: (auth headers, id)."""
    email = f"root-{uuid.uuid4().hex[:8]}@example.com"
    user = User(email=email, hashed_password=hash_password(PASSWORD), is_superuser=True)
    session.add(user)
    session.commit()
    return login(client, email), str(user.id)
