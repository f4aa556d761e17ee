"""Request-scoped dependencies: one Session per request, shared by all, one thread hop.

FastAPI caches a dependency per request, so every dependency that asks for
`SessionDep` (the current user included) gets the same Session, and objects
one returns stay attached for the endpoint. The Session checks out a
connection only when first used and is always closed at the end.

None of these does blocking work on the event loop, and none costs a hop of
its own (service/api/routing.py): the token is checked at once, and the
user is loaded in the endpoint's thread, just before the endpoint runs, on
the request's Session. A read-only request (GET, HEAD) gets a Session in
autocommit (service/db.py): no BEGIN or ROLLBACK round trips.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.routing import InEndpointThread, start_request
from service.db import DEADLINE_KEY, READ_ONLY_KEY
from service.errors import Forbidden, Unauthorized
from service.mail import Mailer
from service.models import User
from service.passwords import PasswordHasher
from service.security import decode_access_token
from service.settings import Settings

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/login/access-token", auto_error=False)

READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    start_request()
    read_only = request.method in READ_ONLY_METHODS
    session: Session = request.app.state.session_factory()
    session.info[READ_ONLY_KEY] = read_only
    deadline = getattr(request.state, "deadline", None)
    if deadline is not None:
        session.info[DEADLINE_KEY] = deadline
    try:
        yield session
    finally:
        if session.in_transaction() and not read_only:
            # An uncommitted write transaction: ROLLBACK is a round trip.
            await run_in_threadpool(_close, session)
        else:
            # Nothing to send: the connection (if any) just goes back to the pool.
            _close(session)


def _close(session: Session) -> None:
    try:
        session.close()
    except SQLAlchemyError:
        # The connection died with the database (rollback on close failed).
        # The answer, a 503, is already sent: drop the connection instead of
        # raising after the response started (nginx would see a 502).
        session.invalidate()


async def get_passwords(request: Request) -> PasswordHasher:
    passwords: PasswordHasher = request.app.state.passwords
    return passwords


async def get_mailer(request: Request) -> Mailer:
    mailer: Mailer = request.app.state.mailer
    return mailer


async def get_deadline(request: Request) -> float | None:
    """When this request's time is up (time.monotonic()), if admission set a deadline."""
    deadline: float | None = getattr(request.state, "deadline", None)
    return deadline


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]
PasswordsDep = Annotated[PasswordHasher, Depends(get_passwords)]
MailerDep = Annotated[Mailer, Depends(get_mailer)]
DeadlineDep = Annotated[float | None, Depends(get_deadline)]


async def get_current_user(
    session: SessionDep, token: TokenDep, settings: SettingsDep
) -> InEndpointThread[User]:
    """The token is checked here; the user is loaded in the endpoint's thread."""
    if not token:
        raise Unauthorized(
            "Not authenticated; send a bearer token from /api/v1/login/access-token.",
            token_sent=False,
        )
    user_id = decode_access_token(token, settings=settings)
    return InEndpointThread(lambda: _load_user(session, user_id))


def _load_user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise Unauthorized("The token's user does not exist; log in again.", reason="unknown_user")
    if not user.is_active:
        raise Forbidden("Inactive user.")
    return user


# What an endpoint declares: it receives the User.
CurrentUser = Annotated[User, Depends(get_current_user)]
# What a dependency built on the current user declares: `.then(check)` it.
CurrentUserInThread = Annotated[InEndpointThread[User], Depends(get_current_user)]


async def get_current_active_superuser(user: CurrentUserInThread) -> InEndpointThread[User]:
    return user.then(_require_superuser)


def _require_superuser(user: User) -> User:
    if not user.is_superuser:
        raise Forbidden("The user doesn't have enough privileges")
    return user


CurrentSuperuser = Annotated[User, Depends(get_current_active_superuser)]
