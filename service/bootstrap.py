"""The first superuser, created when migrations run (migrations/env.py).

From FIRST_SUPERUSER / FIRST_SUPERUSER_PASSWORD (environment or secret files).
Idempotent: a user with that email already there is left exactly as it is,
whatever its password or privileges. In particular an account someone signed
up with that email before the first migration is never promoted; the log
says so, and an operator decides.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import Connection, Table, inspect, select
from sqlalchemy.dialects.postgresql import insert

from service.models import User
from service.passwords import hash_password
from service.settings import Settings

log = logging.getLogger("sluice.bootstrap")


def ensure_first_superuser(*, connection: Connection, settings: Settings) -> bool:
    """Create the configured first superuser if no user has its email; True if created."""
    email = settings.first_superuser
    password = settings.first_superuser_password
    if email is None or password is None:
        return False
    if not inspect(connection).has_table(User.__tablename__):
        return False  # migrated down below the users table
    users = User.__table__
    assert isinstance(users, Table)
    existing = connection.execute(
        select(users.c.is_superuser).where(users.c.email == email.lower())
    ).first()
    if existing is not None:
        if not existing.is_superuser:
            log.warning("FIRST_SUPERUSER %s exists and is not a superuser; left unchanged", email)
        return False
    created = connection.execute(
        insert(users)
        .values(
            id=uuid.uuid4(),
            email=email.lower(),
            hashed_password=hash_password(password.get_secret_value()),
            full_name=None,
            is_active=True,
            is_superuser=True,
        )
        .on_conflict_do_nothing(index_elements=["email"])
    )
    if created.rowcount:
        log.info("created the first superuser %s", email)
    return bool(created.rowcount)
