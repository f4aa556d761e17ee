"""Password recovery by email, in-process, sending to the stack's real SMTP server.

The stack runs aiosmtpd (deploy/services.py), which keeps every message it
accepts in a Maildir; the tests read the message there and follow its link.
"""

from __future__ import annotations

import mailbox
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from service.db import create_session_factory
from service.main import create_app
from service.models import User
from service.passwords import hash_password
from service.security import RESET_AUDIENCE, password_fingerprint
from service.settings import Settings
from tests.ports import free_port
from tests.stackctl import RunningStack

PASSWORD = "correct-horse-battery"
NEW_PASSWORD = "a-new-horse-battery"
RECOVERY_SENT = {"message": "If that email is registered, we sent a password recovery link"}

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(
    unit_settings: Settings, connection: Connection, stack: RunningStack
) -> Iterator[MakeClient]:
    """Builds a TestClient for an app that mails through the stack's SMTP server.

    Keyword arguments override settings (e.g. a port nobody listens on); every
    client shares the test's rolled-back connection.
    """
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        fields = unit_settings.model_dump(exclude_unset=True)
        fields |= {
            "smtp_host": "127.0.0.1",
            "smtp_port": stack.ports["smtp"],
            "smtp_tls": False,
            "emails_from_email": "noreply@example.com",
            "frontend_host": "https://app.example.com",
        }
        app: FastAPI = create_app(Settings(**fields | overrides))
        app.state.session_factory = create_session_factory(
            connection, join_transaction_mode="create_savepoint"
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _user(session: Session, *, superuser: bool = False) -> User:
    user = User(
        email=f"rec-{uuid.uuid4().hex[:10]}@example.com",
        hashed_password=hash_password(PASSWORD),
        is_superuser=superuser,
    )
    session.add(user)
    session.commit()
    return user


def _messages_to(stack: RunningStack, email: str) -> list[Message]:
    """The messages the stack's SMTP server kept for `email` (parsed as RFC 6532, UTF-8 headers)."""
    box = mailbox.Maildir(stack.layout.mail_dir, create=False)
    parsed = (
        message_from_bytes(box.get_bytes(key), policy=policy.default) for key in box.iterkeys()
    )
    return [m for m in parsed if m["To"] == email]


def _reset_token(message: Message) -> str:
    text = next(
        part.get_payload(decode=True).decode()  # type: ignore[union-attr]
        for part in message.walk()
        if part.get_content_type() == "text/plain"
    )
    match = re.search(r"https://app\.example\.com/reset-password\?token=([\w.-]+)", text)
    assert match, text
    return match.group(1)


def _login_status(client: TestClient, email: str, password: str) -> int:
    response = client.post(
        "/api/v1/login/access-token", data={"username": email, "password": password}
    )
    return response.status_code


def test_recovery_mail_carries_a_link_that_resets_the_password_once(
    make_client: MakeClient, session: Session, stack: RunningStack
) -> None:
    client = make_client()
    user = _user(session)
    response = client.post(f"/api/v1/password-recovery/{user.email}")
    assert response.status_code == 200 and response.json() == RECOVERY_SENT
    [message] = _messages_to(stack, user.email)
    assert message["From"] == "Sluice <noreply@example.com>"
    assert message["Subject"] == f"Sluice - Password recovery for user {user.email}"
    token = _reset_token(message)

    reset = client.post(
        "/api/v1/reset-password/", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 200, reset.text
    assert reset.json() == {"message": "Password updated successfully"}
    assert _login_status(client, user.email, NEW_PASSWORD) == 200
    assert _login_status(client, user.email, PASSWORD) == 400

    # The link worked once: the password it was for is gone.
    again = client.post("/api/v1/reset-password/", json={"token": token, "new_password": PASSWORD})
    assert again.status_code == 400
    assert again.json() == {"detail": "Invalid token", "reason": "invalid_token"}
    assert _login_status(client, user.email, NEW_PASSWORD) == 200


def test_an_internationalized_address_gets_its_mail_too(
    make_client: MakeClient, session: Session, stack: RunningStack
) -> None:
    """EmailStr accepts "jürgen@..."; sending it needs SMTPUTF8, which the stack's server has."""
    client = make_client()
    user = User(
        email=f"jürgen-{uuid.uuid4().hex[:8]}@example.com", hashed_password=hash_password(PASSWORD)
    )
    session.add(user)
    session.commit()
    response = client.post(f"/api/v1/password-recovery/{user.email}")
    assert response.status_code == 200 and response.json() == RECOVERY_SENT
    [message] = _messages_to(stack, user.email)
    assert _reset_token(message)


def test_an_unknown_email_gets_the_same_answer_and_no_mail(
    make_client: MakeClient, stack: RunningStack
) -> None:
    client = make_client()
    email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    response = client.post(f"/api/v1/password-recovery/{email}")
    assert response.status_code == 200 and response.json() == RECOVERY_SENT
    assert _messages_to(stack, email) == []


def _forged(settings: Settings, user: User, **claims: Any) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": str(user.id),
        "aud": RESET_AUDIENCE,
        "exp": now + timedelta(hours=1),
        "pwd": password_fingerprint(user.hashed_password, settings=settings),
    } | claims
    return jwt.encode(payload, settings.secret_key.get_secret_value(), algorithm="HS256")


def test_expired_altered_and_foreign_tokens_are_refused(
    make_client: MakeClient, session: Session, unit_settings: Settings
) -> None:
    client = make_client()
    user = _user(session)
    good = _forged(unit_settings, user)
    header, payload, signature = good.split(".")
    access = client.post(
        "/api/v1/login/access-token", data={"username": user.email, "password": PASSWORD}
    ).json()["access_token"]
    cases = {
        "expired": (
            _forged(unit_settings, user, exp=datetime.now(UTC) - timedelta(seconds=1)),
            "token_expired",
        ),
        "altered": (f"{header}.{payload[:-3]}AAA.{signature}", "invalid_token"),
        "other key": (
            jwt.encode(jwt.decode(good, options={"verify_signature": False}), "x" * 40),
            "invalid_token",
        ),
        "an access token": (access, "invalid_token"),
        "no audience": (_forged(unit_settings, user, aud=None), "invalid_token"),
        "garbage": ("garbage", "invalid_token"),
    }
    for name, (token, reason) in cases.items():
        response = client.post(
            "/api/v1/reset-password/", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert response.status_code == 400, (name, response.text)
        assert response.json() == {"detail": "Invalid token", "reason": reason}, name
    assert _login_status(client, user.email, PASSWORD) == 200
    # Nor is a reset token an access token.
    response = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {good}"})
    assert response.status_code == 401 and response.json()["reason"] == "invalid_token"


def test_a_reset_token_for_an_inactive_user_is_refused(
    make_client: MakeClient, session: Session, unit_settings: Settings
) -> None:
    client = make_client()
    user = _user(session)
    user.is_active = False
    session.commit()
    response = client.post(
        "/api/v1/reset-password/",
        json={"token": _forged(unit_settings, user), "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "Inactive user", "reason": "inactive_user"}


def test_mail_server_down_is_the_same_503_for_known_and_unknown_emails(
    make_client: MakeClient, session: Session
) -> None:
    client = make_client(smtp_port=free_port())
    user = _user(session)
    known = client.post(f"/api/v1/password-recovery/{user.email}")
    unknown = client.post(f"/api/v1/password-recovery/nobody-{uuid.uuid4().hex[:6]}@example.com")
    for response in (known, unknown):
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.json()["reason"] == "mail_unavailable"
    assert known.json() == unknown.json()


def test_a_hung_mail_server_is_cut_off_at_the_mail_timeout(
    make_client: MakeClient, session: Session, stack: RunningStack
) -> None:
    """The real SMTP server, stopped (SIGSTOP): it accepts connections, answers nothing."""
    client = make_client(mail_timeout_s=1.0)
    user = _user(session)
    pid = stack.pid("smtp")
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = client.post(f"/api/v1/password-recovery/{user.email}")
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert response.status_code == 503 and response.json()["reason"] == "mail_unavailable"
    assert elapsed < 5, elapsed  # wide: the bound is 1 s


def test_no_mail_server_configured_is_a_clear_503(client: TestClient) -> None:
    response = client.post("/api/v1/password-recovery/someone@example.com")
    assert response.status_code == 503
    assert response.json()["reason"] == "mail_not_configured"
    assert "SMTP_HOST" in response.json()["detail"]


def test_mail_beyond_its_concurrency_bound_is_503_mail_busy(
    make_client: MakeClient, stack: RunningStack
) -> None:
    client = make_client(mail_wait_ms=0)
    app: Any = client.app
    with app.state.mailer.turns.turn():
        response = client.post("/api/v1/password-recovery/someone@example.com")
    assert response.status_code == 503 and response.json()["reason"] == "mail_busy"
    assert response.headers["Retry-After"]


def test_superusers_see_the_recovery_email_without_sending_it(
    make_client: MakeClient, session: Session, stack: RunningStack
) -> None:
    client = make_client()
    root, user = _user(session, superuser=True), _user(session)
    headers = {
        "Authorization": "Bearer "
        + client.post(
            "/api/v1/login/access-token", data={"username": root.email, "password": PASSWORD}
        ).json()["access_token"]
    }
    path = f"/api/v1/password-recovery-html-content/{user.email}"
    response = client.post(path, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["subject"] == f"Sluice - Password recovery for user {user.email}"
    assert "https://app.example.com/reset-password?token=" in response.text
    assert _messages_to(stack, user.email) == []
    missing = client.post(
        "/api/v1/password-recovery-html-content/nobody@example.com", headers=headers
    )
    assert missing.status_code == 404 and missing.json()["reason"] == "not_found"
    normal = {
        "Authorization": "Bearer "
        + client.post(
            "/api/v1/login/access-token", data={"username": user.email, "password": PASSWORD}
        ).json()["access_token"]
    }
    assert client.post(path, headers=normal).status_code == 403


def test_a_user_created_by_a_superuser_gets_no_mail_with_their_password(
    make_client: MakeClient, session: Session, stack: RunningStack
) -> None:
    """The template mails new users their password in clear when mail is set up; Sluice never."""
    client = make_client()
    root = _user(session, superuser=True)
    token = client.post(
        "/api/v1/login/access-token", data={"username": root.email, "password": PASSWORD}
    ).json()["access_token"]
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    created = client.post(
        "/api/v1/users/",
        json={"email": email, "password": PASSWORD},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 201
    assert _messages_to(stack, email) == []
