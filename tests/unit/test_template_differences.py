"""Where Sluice answers differently from fastapi/full-stack-fastapi-template, on purpose.

One test per row of the README's "Differences from the template" table; each
asserts Sluice's answer, and its docstring says what the template answers.
"""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.models import User
from tests.unit.accounts import PASSWORD, signup, superuser


def test_create_is_201(client: TestClient, session: Session) -> None:
    """Template: 200 from POST /users/signup, POST /users/ and POST /items/."""
    headers, _ = signup(client)
    admin, _ = superuser(client, session)
    user = {"email": f"c-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    assert client.post("/api/v1/users/", json=user, headers=admin).status_code == 201
    assert client.post("/api/v1/items/", json={"title": "t"}, headers=headers).status_code == 201


def test_a_taken_email_is_409(client: TestClient, session: Session) -> None:
    """Template: 400 on signup and POST /users/ (409 only on the PATCH routes)."""
    signup(client, "taken-d@example.com")
    admin, _ = superuser(client, session)
    body = {"email": "taken-d@example.com", "password": PASSWORD}
    assert client.post("/api/v1/users/signup", json=body).status_code == 409
    assert client.post("/api/v1/users/", json=body, headers=admin).status_code == 409


def test_another_users_item_is_404(client: TestClient) -> None:
    """Template: 403 "Not enough permissions" (older versions 400), which tells the item exists."""
    alice, _ = signup(client)
    bob, _ = signup(client)
    item = client.post("/api/v1/items/", json={"title": "a"}, headers=alice).json()
    response = client.get(f"/api/v1/items/{item['id']}", headers=bob)
    assert response.status_code == 404
    assert response.json() == client.get(f"/api/v1/items/{uuid.uuid4()}", headers=bob).json()


def test_every_error_has_a_reason(client: TestClient) -> None:
    """Template: {"detail"} only."""
    response = client.get("/api/v1/users/me")
    assert set(response.json()) == {"detail", "reason"}


def test_unknown_fields_and_loose_booleans_are_422(client: TestClient, session: Session) -> None:
    """Template: unknown fields are ignored, 0 or "true" pass as booleans."""
    headers, user_id = signup(client)
    admin, _ = superuser(client, session)
    assert (
        client.patch("/api/v1/users/me", json={"is_superuser": True}, headers=headers).status_code
        == 422
    )
    loose = client.patch(f"/api/v1/users/{user_id}", json={"is_active": 0}, headers=admin)
    assert loose.status_code == 422


def test_an_inactive_users_token_is_403(client: TestClient, session: Session) -> None:
    """Template: 400 "Inactive user"."""
    headers, user_id = signup(client)
    user = session.get(User, uuid.UUID(user_id))
    assert user is not None
    user.is_active = False
    session.commit()
    assert client.get("/api/v1/users/me", headers=headers).status_code == 403


def test_a_superuser_cannot_demote_itself(client: TestClient, session: Session) -> None:
    """Template: PATCH /users/{own id} may drop its own is_superuser or is_active."""
    admin, admin_id = superuser(client, session)
    response = client.patch(
        f"/api/v1/users/{admin_id}", json={"is_superuser": False}, headers=admin
    )
    assert response.status_code == 403 and response.json()["reason"] == "superuser_self_demote"


def test_recovery_without_a_mail_server_is_503(client: TestClient) -> None:
    """Template: an assertion error (500) without SMTP settings; a failed send is logged
    and answered 200. Sluice: 503 (mail_not_configured, mail_unavailable, mail_busy)."""
    response = client.post("/api/v1/password-recovery/anyone@example.com")
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_list_limit_is_at_most_100(client: TestClient, session: Session) -> None:
    """Template: no upper bound on ?limit= (and no order)."""
    admin, _ = superuser(client, session)
    assert client.get("/api/v1/users/?limit=101", headers=admin).status_code == 422
