"""The API in-process against real PostgreSQL: behaviour, errors and ownership."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.models import IdempotencyRecord, Item, User
from service.settings import Settings

PASSWORD = "correct-horse-battery"


def _user(client: TestClient, email: str | None = None) -> dict[str, str]:
    email = email or f"u-{uuid.uuid4().hex[:10]}@example.com"
    assert (
        client.post("/api/v1/users/signup", json={"email": email, "password": PASSWORD}).status_code
        == 201
    )
    token = client.post(
        "/api/v1/login/access-token", data={"username": email, "password": PASSWORD}
    ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_signup_login_me(client: TestClient) -> None:
    headers = _user(client, "Me@Example.com")
    me = client.get("/api/v1/users/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["email"] == "me@example.com"
    assert me.json()["is_superuser"] is False


def test_duplicate_signup_is_409(client: TestClient) -> None:
    _user(client, "dup@example.com")
    again = client.post(
        "/api/v1/users/signup", json={"email": "dup@example.com", "password": PASSWORD}
    )
    assert again.status_code == 409
    assert again.json()["reason"] == "conflict"


def test_signup_cannot_grant_superuser(client: TestClient, session: Session) -> None:
    response = client.post(
        "/api/v1/users/signup",
        json={"email": "sneaky@example.com", "password": PASSWORD, "is_superuser": True},
    )
    assert response.status_code == 422
    assert session.scalar(select(User).where(User.email == "sneaky@example.com")) is None


def test_wrong_password_is_400_json(client: TestClient) -> None:
    _user(client, "pw@example.com")
    response = client.post(
        "/api/v1/login/access-token", data={"username": "pw@example.com", "password": "nope"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Incorrect email or password.",
        "reason": "invalid_credentials",
    }


def test_item_crud_and_paging(client: TestClient) -> None:
    headers = _user(client)
    ids = []
    for n in range(5):
        created = client.post("/api/v1/items/", json={"title": f"t{n}"}, headers=headers)
        assert created.status_code == 201
        ids.append(created.json()["id"])
    page = client.get("/api/v1/items/?skip=1&limit=2", headers=headers).json()
    assert page["count"] == 5 and len(page["data"]) == 2
    item_id = ids[0]
    assert client.get(f"/api/v1/items/{item_id}", headers=headers).json()["title"] == "t0"
    updated = client.put(f"/api/v1/items/{item_id}", json={"title": "new"}, headers=headers)
    assert updated.status_code == 200 and updated.json()["title"] == "new"
    assert client.delete(f"/api/v1/items/{item_id}", headers=headers).status_code == 200
    assert client.get(f"/api/v1/items/{item_id}", headers=headers).status_code == 404


def test_other_users_items_are_404_on_every_route(client: TestClient, session: Session) -> None:
    alice, bob = _user(client), _user(client)
    item_id = client.post("/api/v1/items/", json={"title": "alice's"}, headers=alice).json()["id"]
    assert client.get(f"/api/v1/items/{item_id}", headers=bob).status_code == 404
    assert (
        client.put(f"/api/v1/items/{item_id}", json={"title": "x"}, headers=bob).status_code == 404
    )
    assert client.delete(f"/api/v1/items/{item_id}", headers=bob).status_code == 404
    assert client.get("/api/v1/items/", headers=bob).json() == {"data": [], "count": 0}
    assert session.get(Item, uuid.UUID(item_id)).title == "alice's"  # type: ignore[union-attr]


def test_superuser_sees_every_item(client: TestClient, session: Session) -> None:
    alice, root = _user(client), _user(client, "root@example.com")
    item_id = client.post("/api/v1/items/", json={"title": "a"}, headers=alice).json()["id"]
    user = session.scalar(select(User).where(User.email == "root@example.com"))
    assert user is not None
    user.is_superuser = True
    session.commit()
    assert client.get(f"/api/v1/items/{item_id}", headers=root).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": ',
        b'{"title": 12}',
        b'{"title": ""}',
        b'{"title": "ok", "owner_id": "x"}',
        b"[]",
    ],
)
def test_bad_item_bodies_are_422_and_create_nothing(
    client: TestClient, session: Session, body: bytes
) -> None:
    headers = _user(client) | {"Content-Type": "application/json"}
    before = session.scalar(select(func.count()).select_from(Item))
    response = client.post("/api/v1/items/", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["reason"] == "validation_error"
    assert session.scalar(select(func.count()).select_from(Item)) == before


def test_sql_looking_strings_are_stored_verbatim(client: TestClient) -> None:
    headers = _user(client)
    title = "'; DROP TABLE items; --"
    created = client.post("/api/v1/items/", json={"title": title}, headers=headers).json()
    assert client.get(f"/api/v1/items/{created['id']}", headers=headers).json()["title"] == title


def _token(settings: Settings, **claims: object) -> str:
    payload = {"sub": str(uuid.uuid4()), "exp": datetime.now(UTC) + timedelta(minutes=5)}
    payload.update(claims)
    return jwt.encode(payload, settings.secret_key.get_secret_value(), algorithm="HS256")


def test_bad_tokens_are_401(client: TestClient, unit_settings: Settings) -> None:
    headers = _user(client)
    me = client.get("/api/v1/users/me", headers=headers).json()
    good_claims = {"sub": me["id"]}
    forged = jwt.encode(
        {"sub": me["id"], "exp": datetime.now(UTC) + timedelta(minutes=5)},
        "not-the-secret-key-at-all-not-it-x",
        algorithm="HS256",
    )
    expired = _token(unit_settings, **good_claims, exp=datetime.now(UTC) - timedelta(minutes=1))
    cases = {
        forged: "invalid_token",
        expired: "token_expired",
        _unsigned(me["id"]): "token_algorithm_refused",
        "garbage": "invalid_token",
        "": "unauthorized",  # no token at all
    }
    for token, reason in cases.items():
        response = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
        assert response.json()["reason"] == reason, (token, response.text)
        assert "Traceback" not in response.text


def test_a_401_carries_the_bearer_challenge(client: TestClient, unit_settings: Settings) -> None:
    """RFC 6750: `Bearer` when no token came; error="invalid_token" when one was refused."""
    for headers in ({}, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer "}):
        response = client.get("/api/v1/users/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer", headers
    expired = _token(unit_settings, exp=datetime.now(UTC) - timedelta(minutes=1))
    for token in ("garbage", expired, _token(unit_settings)):  # the last: no such user
        response = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="invalid_token", error_description="'), token
        assert challenge.endswith('"') and challenge.count('"') == 4, challenge
    assert (
        "expired"
        in client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {expired}"}).headers[
            "www-authenticate"
        ]
    )


def _unsigned(subject: str) -> str:
    import base64
    import json

    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    exp = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': subject, 'exp': exp})}."


def test_idempotency_key_replays_the_first_response(client: TestClient, session: Session) -> None:
    headers = _user(client) | {"Idempotency-Key": "retry-1"}
    first = client.post("/api/v1/items/", json={"title": "once"}, headers=headers)
    second = client.post("/api/v1/items/", json={"title": "once"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert session.scalar(select(func.count()).select_from(Item).where(Item.title == "once")) == 1
    different = client.post("/api/v1/items/", json={"title": "other"}, headers=headers)
    assert different.status_code == 422
    assert different.json()["reason"] == "idempotency_key_reused"
    assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 1


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["reason"] == "not_found"
    wrong = client.put("/api/v1/users/me")
    assert wrong.status_code == 405 and wrong.json()["reason"] == "method_not_allowed"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
