"""Users: signup and self-service for everyone, administration for superusers.

Shaped like fastapi/full-stack-fastapi-template's users routes; the README's
API section lists where Sluice answers differently, and why.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from service import crud, transactions
from service.api.deps import (
    CurrentUser,
    PasswordsDep,
    SessionDep,
    get_current_active_superuser,
)
from service.api.routing import OneHopRoute
from service.errors import BadRequest, Forbidden
from service.schemas import (
    ErrorBody,
    Message,
    UpdatePassword,
    UserCreate,
    UserPublic,
    UserRegister,
    UsersPublic,
    UserUpdate,
    UserUpdateMe,
)

router = APIRouter(prefix="/users", tags=["users"], route_class=OneHopRoute)

Superuser = [Depends(get_current_active_superuser)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


@router.get("/", response_model=UsersPublic, dependencies=Superuser, responses=_errors(403))
def read_users(
    session: SessionDep,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> UsersPublic:
    users, count = crud.list_users(session=session, skip=skip, limit=limit)
    return UsersPublic(data=[UserPublic.model_validate(u) for u in users], count=count)


@router.post(
    "/",
    response_model=UserPublic,
    status_code=201,
    dependencies=Superuser,
    responses=_errors(403, 409, 503),
)
def create_user(session: SessionDep, passwords: PasswordsDep, body: UserCreate) -> UserPublic:
    user = crud.create_user(session=session, data=body, passwords=passwords)
    transactions.commit(session)
    return UserPublic.model_validate(user)


@router.patch("/me", response_model=UserPublic, responses=_errors(409))
def update_user_me(
    session: SessionDep, passwords: PasswordsDep, current_user: CurrentUser, body: UserUpdateMe
) -> UserPublic:
    user = crud.update_user(session=session, user=current_user, data=body, passwords=passwords)
    transactions.commit(session)
    return UserPublic.model_validate(user)


@router.patch("/me/password", response_model=Message, responses=_errors(400, 503))
def update_password_me(
    session: SessionDep, passwords: PasswordsDep, current_user: CurrentUser, body: UpdatePassword
) -> Message:
    matches, _ = passwords.verify(body.current_password, current_user.hashed_password)
    if not matches:
        raise BadRequest("Incorrect password", reason="incorrect_password")
    if body.current_password == body.new_password:
        raise BadRequest(
            "New password cannot be the same as the current one", reason="same_password"
        )
    crud.set_password(
        session=session, user=current_user, password=body.new_password, passwords=passwords
    )
    transactions.commit(session)
    return Message(message="Password updated successfully")


@router.get("/me", response_model=UserPublic)
def read_me(current_user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(current_user)


@router.delete("/me", response_model=Message, responses=_errors(403))
def delete_user_me(session: SessionDep, current_user: CurrentUser) -> Message:
    if current_user.is_superuser:
        raise Forbidden(
            "Super users are not allowed to delete themselves", reason="superuser_self_delete"
        )
    crud.delete_user(session=session, user=current_user)
    transactions.commit(session)
    return Message(message="User deleted successfully")


@router.post("/signup", response_model=UserPublic, status_code=201, responses=_errors(409, 503))
def signup(session: SessionDep, passwords: PasswordsDep, body: UserRegister) -> UserPublic:
    # UserRegister has no superuser field and forbids extra fields, so signup
    # can never grant privileges.
    data = UserCreate(**body.model_dump())
    user = crud.create_user(session=session, data=data, passwords=passwords)
    transactions.commit(session)
    return UserPublic.model_validate(user)


@router.get("/{user_id}", response_model=UserPublic, responses=_errors(403, 404))
def read_user_by_id(session: SessionDep, current_user: CurrentUser, user_id: uuid.UUID) -> Any:
    if user_id == current_user.id:
        return UserPublic.model_validate(current_user)
    if not current_user.is_superuser:
        raise Forbidden("The user doesn't have enough privileges")
    return UserPublic.model_validate(crud.get_user(session=session, user_id=user_id))


@router.patch(
    "/{user_id}",
    response_model=UserPublic,
    dependencies=Superuser,
    responses=_errors(403, 404, 409, 503),
)
def update_user(
    session: SessionDep,
    passwords: PasswordsDep,
    current_user: CurrentUser,
    user_id: uuid.UUID,
    body: UserUpdate,
) -> UserPublic:
    user = crud.get_user(session=session, user_id=user_id)
    if user.id == current_user.id and False in (body.is_superuser, body.is_active):
        # As with deleting itself: the last superuser could lock everyone out.
        raise Forbidden(
            "Super users are not allowed to remove their own privileges or deactivate themselves",
            reason="superuser_self_demote",
        )
    user = crud.update_user(session=session, user=user, data=body, passwords=passwords)
    transactions.commit(session)
    return UserPublic.model_validate(user)


@router.delete(
    "/{user_id}", response_model=Message, dependencies=Superuser, responses=_errors(403, 404)
)
def delete_user(session: SessionDep, current_user: CurrentUser, user_id: uuid.UUID) -> Message:
    user = crud.get_user(session=session, user_id=user_id)
    if user.id == current_user.id:
        raise Forbidden(
            "Super users are not allowed to delete themselves", reason="superuser_self_delete"
        )
    crud.delete_user(session=session, user=user)
    transactions.commit(session)
    return Message(message="User deleted successfully")
