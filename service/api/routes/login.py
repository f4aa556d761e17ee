from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from service import crud
from service.api.deps import SessionDep, SettingsDep
from service.api.routing import OneHopRoute
from service.errors import SluiceError
from service.schemas import Token
from service.security import create_access_token

router = APIRouter(tags=["login"], route_class=OneHopRoute)


class InvalidCredentials(SluiceError):
    status_code = 400
    reason = "invalid_credentials"
    detail = "Incorrect email or password."


@router.post("/login/access-token")
def login_access_token(
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    user = crud.authenticate(session=session, email=form.username, password=form.password)
    if user is None:
        raise InvalidCredentials()
    if not user.is_active:
        raise InvalidCredentials("Inactive user.")
    return Token(access_token=create_access_token(subject=user.id, settings=settings))
