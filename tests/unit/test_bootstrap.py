"""The first superuser: created once when migrations run, never changed after."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, select

from service.bootstrap import ensure_first_superuser
from service.models import User
from service.passwords import hash_password, verify_and_update
from service.settings import Settings

PASSWORD = "first-superuser-pw"
USERS: Any = User.__table__


def _settings(password: str = PASSWORD) -> Settings:
    return Settings(
        environment="test", first_superuser="Admin@Example.com", first_superuser_password=password
    )


def _admin(connection: Connection) -> dict[str, Any] | None:
    row = connection.execute(select(USERS).where(USERS.c.email == "admin@example.com")).first()
    return None if row is None else dict(row._mapping)


def test_creates_the_first_superuser_once(connection: Connection) -> None:
    assert ensure_first_superuser(connection=connection, settings=_settings()) is True
    admin = _admin(connection)
    assert admin is not None and admin["is_superuser"] and admin["is_active"]
    assert verify_and_update(PASSWORD, admin["hashed_password"])[0]
    # Run again, even with another password: nothing changes.
    assert ensure_first_superuser(connection=connection, settings=_settings("other-pw-1")) is False
    assert _admin(connection) == admin


def test_an_existing_account_with_that_email_is_never_promoted(connection: Connection) -> None:
    connection.execute(
        USERS.insert().values(
            id=uuid.uuid4(),
            email="admin@example.com",
            hashed_password=hash_password("someone-elses"),
            is_active=True,
            is_superuser=False,
        )
    )
    assert ensure_first_superuser(connection=connection, settings=_settings()) is False
    admin = _admin(connection)
    assert admin is not None and not admin["is_superuser"]
    assert not verify_and_update(PASSWORD, admin["hashed_password"])[0]


def test_nothing_happens_without_the_setting(connection: Connection) -> None:
    unset = Settings(environment="test")
    assert ensure_first_superuser(connection=connection, settings=unset) is False
    assert _admin(connection) is None
