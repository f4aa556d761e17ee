from __future__ import annotations

from fastapi import APIRouter

from service import crud, transactions
from service.api.deps import CurrentUser, SessionDep
from service.api.routing import OneHopRoute
from service.schemas import UserPublic, UserRegister

router = APIRouter(prefix="/users", tags=["users"], route_class=OneHopRoute)


@router.post("/signup", response_model=UserPublic, status_code=201)
def signup(session: SessionDep, body: UserRegister) -> UserPublic:
    # UserRegister has no superuser field and forbids extra fields, so signup
    # can never grant privileges.
    user = crud.create_user(session=session, data=body)
    transactions.commit(session)
    return UserPublic.model_validate(user)


@router.get("/me", response_model=UserPublic)
def read_me(current_user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(current_user)
