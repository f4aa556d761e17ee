"""Login, token test and password recovery, shaped like the template's login routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path
from fastapi.responses import HTMLResponse

from service import crud, transactions
from service.api.deps import (
    CurrentUser,
    DeadlineDep,
    MailerDep,
    PasswordsDep,
    SessionDep,
    SettingsDep,
    get_current_active_superuser,
)
from service.api.routing import OneHopRoute
from service.errors import BadRequest, NotFound, SluiceError
from service.mail import reset_password_email
from service.models import User
from service.schemas import NO_NUL, ErrorBody, Message, NewPassword, Token, UserPublic
from service.security import (
    create_access_token,
    create_password_reset_token,
    decode_password_reset_token,
    password_fingerprint,
)
from service.settings import Settings

router = APIRouter(tags=["login"], route_class=OneHopRoute)

RECOVERY_SENT = "If that email is registered, we sent a password recovery link"

EmailPath = Annotated[str, Path(min_length=3, max_length=255, pattern=NO_NUL)]


class InvalidCredentials(SluiceError):
    status_code = 400
    reason = "invalid_credentials"
    detail = "Incorrect email or password."


class LoginForm:
    """OAuth2PasswordRequestForm's fields, bounded: PostgreSQL text holds no NUL (was a 500)."""

    def __init__(
        self,
        username: Annotated[str, Form(min_length=1, max_length=255, pattern=NO_NUL)],
        password: Annotated[str, Form(min_length=1, max_length=1024)],
        grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
        scope: Annotated[str, Form(max_length=1024)] = "",
        client_id: Annotated[str | None, Form(max_length=255)] = None,
        client_secret: Annotated[str | None, Form(max_length=255)] = None,
    ) -> None:
        self.username = username
        self.password = password
        self.scopes = scope.split()
        self.client_id = client_id
        self.client_secret = client_secret


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


@router.post("/login/access-token", responses=_errors(400, 503))
def login_access_token(
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    form: Annotated[LoginForm, Depends()],
) -> Token:
    user = crud.authenticate(
        session=session, email=form.username, password=form.password, passwords=passwords
    )
    if user is None:
        raise InvalidCredentials()
    if not user.is_active:
        raise InvalidCredentials("Inactive user.", reason="inactive_user")
    if session.dirty:
        transactions.commit(session)  # a bcrypt or outdated hash was replaced
    return Token(access_token=create_access_token(subject=user.id, settings=settings))


@router.post("/login/test-token", response_model=UserPublic)
def test_token(current_user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(current_user)


@router.post("/password-recovery/{email}", response_model=Message, responses=_errors(503))
def recover_password(
    email: EmailPath,
    session: SessionDep,
    settings: SettingsDep,
    mailer: MailerDep,
    deadline: DeadlineDep,
) -> Message:
    """Email a reset link if the account exists; the answer is the same either way.

    The mail server is reached for every request, existing account or not, so
    when it is down or busy every caller gets the same 503 (nothing sent,
    nothing changed) and the status never tells whether the account exists.
    """
    mailer.require_configured()
    user = crud.get_user_by_email(session=session, email=email)
    with mailer.connect(deadline=deadline) as outbox:
        if user is not None:
            subject, text, html_body = _recovery_email(user, settings)
            outbox.send(
                mailer.message(to=user.email, subject=subject, text=text, html_body=html_body)
            )
    return Message(message=RECOVERY_SENT)


@router.post("/reset-password/", response_model=Message, responses=_errors(400, 503))
def reset_password(
    session: SessionDep, settings: SettingsDep, passwords: PasswordsDep, body: NewPassword
) -> Message:
    user_id, fingerprint = decode_password_reset_token(body.token, settings=settings)
    user = session.get(User, user_id)
    # A token for a deleted user, or for a password already changed (this
    # token used once), is as invalid as a forged one.
    if user is None or fingerprint != password_fingerprint(user.hashed_password, settings=settings):
        raise BadRequest("Invalid token", reason="invalid_token")
    if not user.is_active:
        raise BadRequest("Inactive user", reason="inactive_user")
    crud.set_password(session=session, user=user, password=body.new_password, passwords=passwords)
    transactions.commit(session)
    return Message(message="Password updated successfully")


@router.post(
    "/password-recovery-html-content/{email}",
    dependencies=[Depends(get_current_active_superuser)],
    response_class=HTMLResponse,
    # Its errors are JSON like every other; named here, or FastAPI would
    # document them as text/html, the route's own type.
    responses={
        code: {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for code, description in ((403, "Not a superuser"), (404, "No such user"))
    },
)
def recover_password_html_content(
    email: EmailPath, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    """The recovery email a user would get, for superusers to check; sends nothing."""
    user = crud.get_user_by_email(session=session, email=email)
    if user is None:
        raise NotFound("The user with this username does not exist in the system.")
    subject, _, html_body = _recovery_email(user, settings)
    return HTMLResponse(content=html_body, headers={"subject": subject})


def _recovery_email(user: User, settings: Settings) -> tuple[str, str, str]:
    token = create_password_reset_token(
        user_id=user.id, hashed_password=user.hashed_password, settings=settings
    )
    return reset_password_email(settings=settings, email=user.email, token=token)
