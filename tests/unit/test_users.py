"""User administration, self-service and the login extras, in-process against PostgreSQL."""

from __future__ import annotations

import uuid

import bcrypt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.models import Item, User
from tests.unit.accounts import PASSWORD, superuser
from tests.unit.accounts import login as _login
from tests.unit.accounts import signup as _user

USERS = "/api/v1/users/"


@pytest.fixture
def root(client: TestClient, session: Session) -> tuple[dict[str, str], str]:
    return superuser(client, session)


def test_superuser_lists_users_as_data_and_count(
    client: TestClient, root: tuple[dict[str, str], str]
) -> None:
    for _ in range(3):
        _user(client)
    page = client.get(f"{USERS}?skip=1&limit=2", headers=root[0])
    assert page.status_code == 200
    body = page.json()
    assert set(body) == {"data", "count"} and body["count"] >= 4 and len(body["data"]) == 2
    assert set(body["data"][0]) == {
        "id",
        "email",
        "full_name",
        "is_active",
        "is_superuser",
        "created_at",
    }


def test_normal_user_may_not_administer_users(
    client: TestClient, root: tuple[dict[str, str], str], session: Session
) -> None:
    headers, own_id = _user(client)
    _, other_id = _user(client)
    new = {"email": "made-by-normal@example.com", "password": PASSWORD}
    calls = [
        ("GET", USERS, None),
        ("POST", USERS, new),
        ("GET", f"{USERS}{other_id}", None),
        ("PATCH", f"{USERS}{other_id}", {"full_name": "hijacked"}),
        ("DELETE", f"{USERS}{other_id}", None),
        ("PATCH", f"{USERS}{own_id}", {"is_superuser": True}),  # not even oneself
    ]
    for method, path, body in calls:
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json() == {
            "detail": "The user doesn't have enough privileges",
            "reason": "forbidden",
        }
    other = session.get(User, uuid.UUID(other_id))
    assert other is not None and other.full_name is None
    me = session.get(User, uuid.UUID(own_id))
    assert me is not None and not me.is_superuser
    assert session.scalar(select(User).where(User.email == new["email"])) is None
    assert client.get(f"{USERS}{own_id}", headers=headers).json()["id"] == own_id


def test_superuser_creates_reads_updates_and_deletes_a_user(
    client: TestClient, root: tuple[dict[str, str], str], session: Session
) -> None:
    admin = root[0]
    body = {
        "email": "New@Example.com",
        "password": PASSWORD,
        "full_name": "N",
        "is_superuser": True,
    }
    created = client.post(USERS, json=body, headers=admin)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["email"] == "new@example.com" and user["is_superuser"] is True
    assert client.get(f"{USERS}{user['id']}", headers=admin).json() == user

    patched = client.patch(
        f"{USERS}{user['id']}", json={"full_name": "Renamed", "is_active": False}, headers=admin
    )
    assert patched.status_code == 200
    assert patched.json()["full_name"] == "Renamed" and patched.json()["is_active"] is False
    inactive = client.post(
        "/api/v1/login/access-token", data={"username": "new@example.com", "password": PASSWORD}
    )
    assert inactive.status_code == 400 and inactive.json()["reason"] == "inactive_user"

    deleted = client.delete(f"{USERS}{user['id']}", headers=admin)
    assert deleted.status_code == 200
    assert deleted.json() == {"message": "User deleted successfully"}
    assert session.get(User, uuid.UUID(user["id"])) is None
    for method in ("GET", "PATCH", "DELETE"):
        gone = client.request(method, f"{USERS}{user['id']}", json={}, headers=admin)
        assert gone.status_code == 404 and gone.json()["reason"] == "not_found", method


def test_a_taken_email_is_refused_on_create_and_update(
    client: TestClient, root: tuple[dict[str, str], str]
) -> None:
    admin = root[0]
    headers, user_id = _user(client, "taken@example.com")
    _, other_id = _user(client, "other@example.com")
    attempts = [
        client.post(
            USERS, json={"email": "TAKEN@example.com", "password": PASSWORD}, headers=admin
        ),
        client.patch(f"{USERS}{other_id}", json={"email": "taken@example.com"}, headers=admin),
        client.patch(f"{USERS}me", json={"email": "other@example.com"}, headers=headers),
    ]
    for response in attempts:
        assert response.status_code == 409, response.text
        assert response.json() == {
            "detail": "A user with this email already exists.",
            "reason": "conflict",
        }
    # One's own email is not "taken".
    same = client.patch(f"{USERS}me", json={"email": "taken@example.com"}, headers=headers)
    assert same.status_code == 200 and same.json()["id"] == user_id


def test_update_me_changes_only_what_a_user_may(client: TestClient, session: Session) -> None:
    headers, user_id = _user(client)
    response = client.patch(
        f"{USERS}me", json={"full_name": "Ada", "email": "ada@example.com"}, headers=headers
    )
    assert response.status_code == 200
    assert response.json()["full_name"] == "Ada" and response.json()["email"] == "ada@example.com"
    for sneaky in ({"is_superuser": True}, {"is_active": False}, {"email": None}):
        refused = client.patch(f"{USERS}me", json=sneaky, headers=headers)
        assert refused.status_code == 422, sneaky
    user = session.get(User, uuid.UUID(user_id))
    assert user is not None and not user.is_superuser and user.is_active


def test_a_changed_password_works_at_once_and_the_old_one_stops(
    client: TestClient, session: Session
) -> None:
    headers, _ = _user(client, "pw-change@example.com")
    wrong = client.patch(
        f"{USERS}me/password",
        json={"current_password": "not-the-password", "new_password": "brand-new-pass"},
        headers=headers,
    )
    assert wrong.status_code == 400
    assert wrong.json() == {"detail": "Incorrect password", "reason": "incorrect_password"}
    same = client.patch(
        f"{USERS}me/password",
        json={"current_password": PASSWORD, "new_password": PASSWORD},
        headers=headers,
    )
    assert same.status_code == 400 and same.json()["reason"] == "same_password"
    changed = client.patch(
        f"{USERS}me/password",
        json={"current_password": PASSWORD, "new_password": "brand-new-pass"},
        headers=headers,
    )
    assert changed.status_code == 200
    assert changed.json() == {"message": "Password updated successfully"}
    _login(client, "pw-change@example.com", "brand-new-pass")
    old = client.post(
        "/api/v1/login/access-token",
        data={"username": "pw-change@example.com", "password": PASSWORD},
    )
    assert old.status_code == 400 and old.json()["reason"] == "invalid_credentials"


def test_delete_me_takes_the_items_along_but_not_for_a_superuser(
    client: TestClient, session: Session, root: tuple[dict[str, str], str]
) -> None:
    headers, user_id = _user(client)
    for n in range(3):
        client.post("/api/v1/items/", json={"title": f"mine-{n}"}, headers=headers)
    response = client.delete(f"{USERS}me", headers=headers)
    assert response.status_code == 200 and response.json() == {
        "message": "User deleted successfully"
    }
    assert session.get(User, uuid.UUID(user_id)) is None
    owned = select(func.count()).select_from(Item).where(Item.owner_id == uuid.UUID(user_id))
    assert session.scalar(owned) == 0
    # The deleted user's token no longer works.
    assert client.get(f"{USERS}me", headers=headers).json()["reason"] == "unknown_user"

    admin, admin_id = root
    for path in (f"{USERS}me", f"{USERS}{admin_id}"):
        refused = client.delete(path, headers=admin)
        assert refused.status_code == 403
        assert refused.json() == {
            "detail": "Super users are not allowed to delete themselves",
            "reason": "superuser_self_delete",
        }
    assert session.get(User, uuid.UUID(admin_id)) is not None


def test_test_token_returns_the_user(client: TestClient) -> None:
    headers, user_id = _user(client)
    response = client.post("/api/v1/login/test-token", headers=headers)
    assert response.status_code == 200 and response.json()["id"] == user_id
    assert client.post("/api/v1/login/test-token").status_code == 401


def test_a_nul_byte_in_the_login_username_is_422(client: TestClient) -> None:
    response = client.post(
        "/api/v1/login/access-token", data={"username": "a\x00b@example.com", "password": "x"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == "validation_error"


@pytest.mark.parametrize("password", ["template-user-pw", "é" * 40])  # the second: 80 bytes
def test_a_bcrypt_hash_from_the_template_verifies_and_becomes_argon2(
    client: TestClient, session: Session, password: str
) -> None:
    # As the template stores it: bcrypt, cost 12, $2b$; bcrypt itself reads
    # only the first 72 bytes, so a longer password hashes as its prefix.
    legacy = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(12, b"2b")).decode()
    email = f"bcrypt-{uuid.uuid4().hex[:8]}@example.com"
    user = User(email=email, hashed_password=legacy)
    session.add(user)
    session.commit()

    wrong = client.post("/api/v1/login/access-token", data={"username": email, "password": "nope"})
    assert wrong.status_code == 400
    session.refresh(user)
    assert user.hashed_password == legacy  # a failed login changes nothing

    _login(client, email, password)
    session.refresh(user)
    assert user.hashed_password.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    _login(client, email, password)  # and the new hash works


def test_an_argon2_hash_with_old_parameters_is_upgraded(
    client: TestClient, session: Session
) -> None:
    from pwdlib.hashers.argon2 import Argon2Hasher

    email = f"argon-old-{uuid.uuid4().hex[:8]}@example.com"
    old = Argon2Hasher(time_cost=3, memory_cost=65536, parallelism=4).hash(PASSWORD)
    user = User(email=email, hashed_password=old)
    session.add(user)
    session.commit()
    _login(client, email)
    session.refresh(user)
    assert user.hashed_password.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_hashing_beyond_its_bound_is_503_and_creates_nothing(
    client: TestClient, app: FastAPI, session: Session
) -> None:
    email = f"busy-{uuid.uuid4().hex[:8]}@example.com"
    turns = app.state.passwords.turns
    with turns.turn():  # this worker's only hashing turn is taken
        signup = client.post("/api/v1/users/signup", json={"email": email, "password": PASSWORD})
        login = client.post("/api/v1/login/access-token", data={"username": email, "password": "x"})
    for response in (signup, login):
        assert response.status_code == 503, response.text
        assert response.json()["reason"] == "hashing_busy"
        assert response.headers["Retry-After"]
    assert session.scalar(select(User).where(User.email == email)) is None
    _user(client, email)  # the turn is back


def test_a_superuser_cannot_demote_or_deactivate_itself(
    client: TestClient, root: tuple[dict[str, str], str], session: Session
) -> None:
    admin, admin_id = root
    for change in ({"is_superuser": False}, {"is_active": False}):
        response = client.patch(f"{USERS}{admin_id}", json=change, headers=admin)
        assert response.status_code == 403, response.text
        assert response.json()["reason"] == "superuser_self_demote"
    user = session.get(User, uuid.UUID(admin_id))
    assert user is not None and user.is_superuser and user.is_active
    # Its own name, email or password it may change there.
    renamed = client.patch(f"{USERS}{admin_id}", json={"full_name": "Root"}, headers=admin)
    assert renamed.status_code == 200 and renamed.json()["full_name"] == "Root"


@pytest.mark.parametrize("value", [0, 1, "true", "false", None])
def test_flags_are_json_booleans_only(
    client: TestClient, root: tuple[dict[str, str], str], value: object
) -> None:
    admin, _ = root
    _, user_id = _user(client)
    response = client.patch(f"{USERS}{user_id}", json={"is_superuser": value}, headers=admin)
    assert response.status_code == 422, response.text
    created = client.post(
        USERS,
        json={
            "email": f"f-{uuid.uuid4().hex[:6]}@example.com",
            "password": PASSWORD,
            "is_active": value,
        },
        headers=admin,
    )
    assert created.status_code == 422, created.text


NEW_ROUTES = [
    ("POST", "/api/v1/login/test-token"),
    ("POST", "/api/v1/password-recovery/a@example.com"),
    ("POST", "/api/v1/reset-password/"),
    ("POST", "/api/v1/password-recovery-html-content/a@example.com"),
    ("GET", USERS),
    ("POST", USERS),
    ("PATCH", f"{USERS}me"),
    ("PATCH", f"{USERS}me/password"),
    ("DELETE", f"{USERS}me"),
    ("GET", f"{USERS}{uuid.UUID(int=1)}"),
    ("PATCH", f"{USERS}{uuid.UUID(int=1)}"),
    ("DELETE", f"{USERS}{uuid.UUID(int=1)}"),
]


@pytest.mark.parametrize(("method", "path"), NEW_ROUTES)
def test_every_new_route_is_behind_admission_control(
    client: TestClient, method: str, path: str
) -> None:
    import time

    # The route exists (admitted, it answers for itself: 401, 422, 503 mail...)...
    fresh = client.request(method, path, headers={"X-Request-Start": f"t={time.time():.3f}"})
    assert fresh.json()["reason"] not in ("not_found", "method_not_allowed"), fresh.text
    # ...and a request that already spent its deadline upstream never reaches it.
    stale = {"X-Request-Start": f"t={time.time() - 60:.3f}"}
    response = client.request(method, path, headers=stale)
    assert response.status_code == 503, response.text
    assert response.json()["reason"] == "deadline_expired_upstream"


def test_every_new_route_uses_one_session_per_request(
    client: TestClient, app: FastAPI, root: tuple[dict[str, str], str]
) -> None:
    """The current user and the endpoint share the request's one Session (deps.py)."""
    admin, _ = root
    headers, user_id = _user(client)
    opened: list[object] = []
    factory = app.state.session_factory

    def counting() -> Session:
        session: Session = factory()
        opened.append(session)
        return session

    app.state.session_factory = counting
    calls = [
        ("PATCH", f"{USERS}me", headers, {"full_name": "One"}),
        (
            "PATCH",
            f"{USERS}me/password",
            headers,
            {"current_password": PASSWORD, "new_password": "pw-two-22"},
        ),
        ("GET", USERS, admin, None),
        ("GET", f"{USERS}{user_id}", admin, None),
        ("PATCH", f"{USERS}{user_id}", admin, {"full_name": "Two"}),
        ("POST", "/api/v1/login/test-token", admin, None),
        ("DELETE", f"{USERS}{user_id}", admin, None),
    ]
    for method, path, auth, body in calls:
        opened.clear()
        response = client.request(method, path, json=body, headers=auth)
        assert response.status_code == 200, (method, path, response.text)
        assert len(opened) == 1, (method, path, len(opened))
