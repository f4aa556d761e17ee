"""Request-scoped dependencies: one Session per request, shared by all.

FastAPI caches a dependency per request, so every dependency that asks for
`SessionDep` (the current user included) gets the same Session, and objects
one returns stay attached for the endpoint. The Session checks out a
connection only when first used and is always closed at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.db import DEADLINE_KEY
from service.errors import Forbidden, Unauthorized
from service.mail import Mailer
from service.models import User
from service.passwords import PasswordHasher
from service.security import decode_access_token
from service.settings import Settings

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/login/access-token", auto_error=False)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.session_factory()
    deadline = getattr(request.state, "deadline", None)
    if deadline is not None:
        session.info[DEADLINE_KEY] = deadline
    try:
        yield session
    finally:
        try:
            session.close()
        except SQLAlchemyError:
            # The connection died with the database (rollback on close failed).
            # The answer, a 503, is already sent: drop the connection instead of
            # raising after the response started (nginx would see a 502).
            session.invalidate()


def get_passwords(request: Request) -> PasswordHasher:
    passwords: PasswordHasher = request.app.state.passwords
    return passwords


def get_mailer(request: Request) -> Mailer:
    mailer: Mailer = request.app.state.mailer
    return mailer


def get_deadline(request: Request) -> float | None:
    """When this request's time is up (time.monotonic()), if admission set a deadline."""
    deadline: float | None = getattr(request.state, "deadline", None)
    return deadline


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]
PasswordsDep = Annotated[PasswordHasher, Depends(get_passwords)]
MailerDep = Annotated[Mailer, Depends(get_mailer)]
DeadlineDep = Annotated[float | None, Depends(get_deadline)]


def get_current_user(session: SessionDep, token: TokenDep, settings: SettingsDep) -> User:
    if not token:
        raise Unauthorized(
            "Not authenticated; send a bearer token from /api/v1/login/access-token."
        )
    user = session.get(User, decode_access_token(token, settings=settings))
    if user is None:
        raise Unauthorized("The token's user does not exist; log in again.", reason="unknown_user")
    if not user.is_active:
        raise Forbidden("Inactive user.")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_current_active_superuser(current_user: CurrentUser) -> User:
    if not current_user.is_superuser:
        raise Forbidden("The user doesn't have enough privileges")
    return current_user


CurrentSuperuser = Annotated[User, Depends(get_current_active_superuser)]
