from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from service import crud, idempotency, transactions
from service.api.deps import CurrentUser, SessionDep
from service.api.routing import OneHopRoute
from service.schemas import (
    ItemCreate,
    ItemPublic,
    ItemsPublic,
    ItemUpdate,
    Message,
    UnprocessableBody,
)

router = APIRouter(prefix="/items", tags=["items"], route_class=OneHopRoute)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retrying with the same key and body returns the first response.",
    ),
]


@router.get("/", response_model=ItemsPublic)
def read_items(
    session: SessionDep,
    current_user: CurrentUser,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ItemsPublic:
    items, count = crud.list_items(session=session, user=current_user, skip=skip, limit=limit)
    return ItemsPublic(data=[ItemPublic.model_validate(i) for i in items], count=count)


@router.post(
    "/",
    response_model=ItemPublic,
    status_code=201,
    responses={422: {"model": UnprocessableBody}},
)
def create_item(
    request: Request,
    session: SessionDep,
    current_user: CurrentUser,
    body: ItemCreate,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    def effect() -> tuple[int, Any]:
        item = crud.create_item(session=session, owner=current_user, data=body)
        return 201, ItemPublic.model_validate(item).model_dump(mode="json")

    if idempotency_key is None:
        status, payload = effect()
    else:
        status, payload = idempotency.run_once(
            session=session,
            owner_id=current_user.id,
            key=idempotency_key,
            fingerprint=idempotency.request_fingerprint(
                method="POST", path=request.url.path, body=body.model_dump(mode="json")
            ),
            effect=effect,
        )
    transactions.commit(session)
    return JSONResponse(payload, status_code=status)


@router.get("/{item_id}", response_model=ItemPublic)
def read_item(session: SessionDep, current_user: CurrentUser, item_id: uuid.UUID) -> ItemPublic:
    return ItemPublic.model_validate(
        crud.get_item(session=session, user=current_user, item_id=item_id)
    )


@router.put("/{item_id}", response_model=ItemPublic)
def update_item(
    session: SessionDep, current_user: CurrentUser, item_id: uuid.UUID, body: ItemUpdate
) -> ItemPublic:
    item = crud.get_item(session=session, user=current_user, item_id=item_id)
    item = crud.update_item(session=session, item=item, data=body)
    result = ItemPublic.model_validate(item)
    transactions.commit(session)
    return result


@router.delete("/{item_id}", response_model=Message)
def delete_item(session: SessionDep, current_user: CurrentUser, item_id: uuid.UUID) -> Message:
    item = crud.get_item(session=session, user=current_user, item_id=item_id)
    crud.delete_item(session=session, item=item)
    transactions.commit(session)
    return Message(message="Item deleted successfully")
