"""Users, privileges and password recovery through nginx → Gunicorn → PgBouncer → PostgreSQL.

The superuser is the one the stack's migrate step bootstrapped; mail goes to
the stack's own SMTP server (aiosmtpd), whose Maildir the tests read.
"""

from __future__ import annotations

import mailbox
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message
from typing import Any

import httpx
import jwt
import psycopg2
import pytest

from deploy.environment import first_superuser
from tests.api import Api
from tests.stackctl import ROOT, RunningStack

USERS = "/api/v1/users/"
FORBIDDEN = {"detail": "The user doesn't have enough privileges", "reason": "forbidden"}


@pytest.fixture(scope="module")
def root(stack: RunningStack) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """The bootstrapped first superuser: (its credentials, auth headers)."""
    credentials = first_superuser(stack.layout, stack.environment)
    api = Api(stack.url)
    token = api.login(credentials["FIRST_SUPERUSER"], credentials["FIRST_SUPERUSER_PASSWORD"])
    yield credentials, {"Authorization": f"Bearer {token}"}
    api.close()


def _db_one(stack: RunningStack, sql: str, *args: object) -> tuple[Any, ...] | None:
    with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        row: tuple[Any, ...] | None = cur.fetchone()
    conn.close()
    return row


def test_the_first_superuser_was_created_at_migration_and_rerunning_changes_nothing(
    stack: RunningStack, root: tuple[dict[str, str], dict[str, str]], api: Api
) -> None:
    credentials, headers = root
    email = credentials["FIRST_SUPERUSER"]
    me = api.http.get(f"{USERS}me", headers=headers).json()
    assert me["email"] == email and me["is_superuser"] is True
    before = _db_one(stack, "SELECT id, hashed_password FROM users WHERE email = %s", email)
    # The migrate step again, as compose's one-shot service or the k8s Job would
    # re-run it, with another password: the superuser stays as it is.
    env = dict(
        stack.environment,
        SLUICE_DB_PORT=str(stack.ports["postgres"]),
        FIRST_SUPERUSER=email,
        FIRST_SUPERUSER_PASSWORD="another-password-1",
    )
    rerun = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert _db_one(stack, "SELECT id, hashed_password FROM users WHERE email = %s", email) == before
    assert _db_one(stack, "SELECT count(*) FROM users WHERE is_superuser") == (1,)


def test_a_normal_user_cannot_list_read_change_or_delete_other_users(
    stack: RunningStack, api: Api
) -> None:
    me, headers = api.new_user()
    other, _ = api.new_user()
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", USERS, None),
        (
            "POST",
            USERS,
            {"email": f"x-{uuid.uuid4().hex[:8]}@example.com", "password": "pw-12345678"},
        ),
        ("GET", f"{USERS}{other['id']}", None),
        ("PATCH", f"{USERS}{other['id']}", {"full_name": "hijacked", "is_active": False}),
        ("DELETE", f"{USERS}{other['id']}", None),
        ("PATCH", f"{USERS}{me['id']}", {"is_superuser": True}),
    ]
    for method, path, body in calls:
        response = api.http.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json() == FORBIDDEN
    row = _db_one(stack, "SELECT full_name, is_active FROM users WHERE id = %s", other["id"])
    assert row == (None, True)
    assert _db_one(stack, "SELECT is_superuser FROM users WHERE id = %s", me["id"]) == (False,)


def test_a_superuser_cannot_delete_itself(
    stack: RunningStack, root: tuple[dict[str, str], dict[str, str]], api: Api
) -> None:
    _, headers = root
    me = api.http.get(f"{USERS}me", headers=headers).json()
    for path in (f"{USERS}me", f"{USERS}{me['id']}"):
        response = api.http.delete(path, headers=headers)
        assert response.status_code == 403, response.text
        assert response.json()["reason"] == "superuser_self_delete"
    assert _db_one(stack, "SELECT count(*) FROM users WHERE id = %s", me["id"]) == (1,)


def test_a_taken_email_is_refused_on_create_and_update(
    stack: RunningStack, root: tuple[dict[str, str], dict[str, str]], api: Api
) -> None:
    _, admin = root
    taken, taken_headers = api.new_user()
    other, _ = api.new_user()
    attempts = [
        api.http.post(
            USERS, json={"email": taken["email"], "password": "pw-12345678"}, headers=admin
        ),
        api.http.post(
            "/api/v1/users/signup",
            json={"email": taken["email"].upper(), "password": "pw-12345678"},
        ),
        api.http.patch(f"{USERS}{other['id']}", json={"email": taken["email"]}, headers=admin),
        api.http.patch(f"{USERS}me", json={"email": other["email"]}, headers=taken_headers),
    ]
    for response in attempts:
        assert response.status_code == 409, response.text
        assert response.json()["reason"] == "conflict"
    assert _db_one(stack, "SELECT count(*) FROM users WHERE email = %s", taken["email"]) == (1,)
    assert _db_one(stack, "SELECT email FROM users WHERE id = %s", other["id"]) == (other["email"],)


def _login_status(api: Api, email: str, password: str) -> int:
    data = {"username": email, "password": password}
    return api.http.post("/api/v1/login/access-token", data=data).status_code


def test_a_changed_password_works_at_once_and_the_old_one_stops(
    root: tuple[dict[str, str], dict[str, str]], api: Api
) -> None:
    user, headers = api.new_user()
    changed = api.http.patch(
        f"{USERS}me/password",
        json={"current_password": user["password"], "new_password": "second-password"},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    assert _login_status(api, user["email"], "second-password") == 200
    assert _login_status(api, user["email"], user["password"]) == 400
    # A superuser setting it: the same, at once.
    _, admin = root
    set_by_admin = api.http.patch(
        f"{USERS}{user['id']}", json={"password": "third-password"}, headers=admin
    )
    assert set_by_admin.status_code == 200, set_by_admin.text
    assert _login_status(api, user["email"], "third-password") == 200
    assert _login_status(api, user["email"], "second-password") == 400


def test_deleting_a_user_deletes_their_items_in_the_same_transaction(
    stack: RunningStack, root: tuple[dict[str, str], dict[str, str]], api: Api
) -> None:
    _, admin = root
    user, headers = api.new_user()
    ids = [
        api.http.post("/api/v1/items/", json={"title": f"doomed-{n}"}, headers=headers).json()["id"]
        for n in range(5)
    ]
    owned = "SELECT count(*) FROM items WHERE owner_id = %s"
    # One item locked elsewhere: the cascade cannot finish within the request's
    # deadline, and the whole delete, user and items, is rolled back.
    with psycopg2.connect(stack.database_url) as lock, lock.cursor() as cur:
        cur.execute("SELECT id FROM items WHERE id = %s FOR UPDATE", (ids[-1],))
        refused = api.http.delete(f"{USERS}{user['id']}", headers=admin)
        lock.rollback()
    lock.close()
    assert refused.status_code == 503, refused.text
    assert refused.json()["reason"] in ("statement_timeout", "deadline_exceeded")
    assert _db_one(stack, "SELECT count(*) FROM users WHERE id = %s", user["id"]) == (1,)
    assert _db_one(stack, owned, user["id"]) == (5,)

    deleted = api.http.delete(f"{USERS}{user['id']}", headers=admin)
    assert deleted.status_code == 200, deleted.text
    assert _db_one(stack, "SELECT count(*) FROM users WHERE id = %s", user["id"]) == (0,)
    assert _db_one(stack, owned, user["id"]) == (0,)
    assert api.http.get(f"/api/v1/items/{ids[0]}", headers=admin).status_code == 404


# --------------------------------------------------------------------------
# Password recovery with the stack's real SMTP server


def _mail_to(stack: RunningStack, email: str, timeout_s: float = 5.0) -> list[Message]:
    deadline = time.monotonic() + timeout_s
    while True:
        box = mailbox.Maildir(stack.layout.mail_dir, create=False)
        parsed = (
            message_from_bytes(box.get_bytes(k), policy=policy.default) for k in box.iterkeys()
        )
        found: list[Message] = [m for m in parsed if m["To"] == email]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _token_in(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            match = re.search(r"/reset-password\?token=([\w.-]+)", payload.decode())
            assert match, payload
            return match.group(1)
    raise AssertionError("no text part")


def test_recovery_mail_is_sent_and_its_link_sets_a_new_password(
    stack: RunningStack, api: Api
) -> None:
    user, _ = api.new_user()
    response = api.http.post(f"/api/v1/password-recovery/{user['email']}")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "message": "If that email is registered, we sent a password recovery link"
    }
    [message] = _mail_to(stack, user["email"])
    token = _token_in(message)
    reset = api.http.post(
        "/api/v1/reset-password/", json={"token": token, "new_password": "recovered-pw-1"}
    )
    assert reset.status_code == 200, reset.text
    assert _login_status(api, user["email"], "recovered-pw-1") == 200
    assert _login_status(api, user["email"], user["password"]) == 400
    reused = api.http.post(
        "/api/v1/reset-password/", json={"token": token, "new_password": "recovered-pw-2"}
    )
    assert reused.status_code == 400 and reused.json()["reason"] == "invalid_token"

    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    same = api.http.post(f"/api/v1/password-recovery/{unknown}")
    assert (same.status_code, same.json()) == (200, response.json())
    assert _mail_to(stack, unknown, timeout_s=0.5) == []


def test_an_expired_or_altered_reset_token_is_refused(stack: RunningStack, api: Api) -> None:
    user, _ = api.new_user()
    api.http.post(f"/api/v1/password-recovery/{user['email']}")
    [message] = _mail_to(stack, user["email"])
    token = _token_in(message)
    key = (stack.state / "secret_key").read_text().strip()
    claims = jwt.decode(token, key, algorithms=["HS256"], audience="sluice:password-reset")
    expired = jwt.encode({**claims, "exp": datetime.now(UTC) - timedelta(seconds=1)}, key)
    header, payload, signature = token.split(".")
    for bad, reason in (
        (expired, "token_expired"),
        (f"{header}.{payload[:-3]}AAA.{signature}", "invalid_token"),
        (f"{header}.{payload}.{signature[:-3]}AAA", "invalid_token"),
    ):
        response = api.http.post(
            "/api/v1/reset-password/", json={"token": bad, "new_password": "stolen-pw-123"}
        )
        assert response.status_code == 400, response.text
        assert response.json() == {"detail": "Invalid token", "reason": reason}
    assert _login_status(api, user["email"], user["password"]) == 200


def test_mail_server_down_is_one_clear_503_whether_or_not_the_account_exists(
    stack: RunningStack, api: Api
) -> None:
    user, _ = api.new_user()
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    stack.stop_service("smtp")
    try:
        answers = [
            api.http.post(f"/api/v1/password-recovery/{email}")
            for email in (user["email"], unknown)
        ]
    finally:
        stack.start_service("smtp")
    for response in answers:
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"]
        assert response.json()["reason"] == "mail_unavailable"
    assert answers[0].json() == answers[1].json()
    assert _mail_to(stack, user["email"], timeout_s=0.5) == []
    assert _login_status(api, user["email"], user["password"]) == 200
    # Back up: recovery works again.
    assert api.http.post(f"/api/v1/password-recovery/{user['email']}").status_code == 200


def test_a_hung_mail_server_holds_one_slot_for_a_bounded_time_while_others_are_served(
    stack: RunningStack, api: Api
) -> None:
    """SIGSTOP: the SMTP server's socket still accepts, but nothing answers."""
    user, headers = api.new_user()
    pid = stack.pid("smtp")
    result: dict[str, Any] = {}

    def recover() -> None:
        started = time.monotonic()
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            result["response"] = http.post(f"/api/v1/password-recovery/{user['email']}")
        result["seconds"] = time.monotonic() - started

    os.kill(pid, signal.SIGSTOP)
    try:
        caller = threading.Thread(target=recover)
        caller.start()
        time.sleep(0.3)
        reads = [api.http.get(f"{USERS}me", headers=headers).status_code for _ in range(10)]
        caller.join(timeout=30)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert reads == [200] * 10
    response = result["response"]
    assert response.status_code == 503 and response.json()["reason"] == "mail_unavailable"
    # SLUICE_MAIL_TIMEOUT_S is 3 s; the bound here is wide on purpose.
    assert result["seconds"] < 8, result["seconds"]
