"""Database operations, keyword-only, each taking the request's session."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import Conflict, NotFound
from service.models import Item, User
from service.schemas import ItemCreate, ItemUpdate, UserRegister
from service.security import hash_password, verify_password

_UNIQUE_VIOLATION = "23505"


def get_user_by_email(*, session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email.lower()))


def create_user(*, session: Session, data: UserRegister, is_superuser: bool = False) -> User:
    if get_user_by_email(session=session, email=data.email) is not None:
        raise Conflict("A user with this email already exists.")
    user = User(
        email=data.email.lower(),
        hashed_password=hash_password(data.password),
        full_name=data.full_name,
        is_superuser=is_superuser,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        # Two signups with one email can both pass the check above (hashing
        # takes a while); the unique index decides, and the loser gets a 409.
        if getattr(exc.orig, "pgcode", None) == _UNIQUE_VIOLATION:
            raise Conflict("A user with this email already exists.") from exc
        raise
    return user


def authenticate(*, session: Session, email: str, password: str) -> User | None:
    user = get_user_by_email(session=session, email=email)
    if not verify_password(password, user.hashed_password if user else None):
        return None
    return user


def _visible_items(user: User) -> Select[Item]:
    query = select(Item)
    return query if user.is_superuser else query.where(Item.owner_id == user.id)


def list_items(*, session: Session, user: User, skip: int, limit: int) -> tuple[list[Item], int]:
    """A page of the items `user` may see, newest first, and how many there are in all.

    The page's ids are found first, in the (owner_id, created_at DESC, id)
    index alone (an index-only scan past `skip` entries), and only the page's
    own rows are read from the table: OFFSET over whole rows would read and
    throw away every skipped row. An owner's total is on their row
    (`users.item_count`, kept by triggers), loaded with them already; only a
    superuser's total over everybody's items is counted.
    """
    order = (Item.created_at.desc(), Item.id)
    page_ids = (
        _visible_items(user).with_only_columns(Item.id).order_by(*order).offset(skip).limit(limit)
    ).subquery()
    rows = session.scalars(select(Item).join(page_ids, Item.id == page_ids.c.id).order_by(*order))
    if user.is_superuser:
        count = session.scalar(select(func.count()).select_from(Item)) or 0
    else:
        count = user.item_count
    return list(rows.all()), count


def get_item(*, session: Session, user: User, item_id: uuid.UUID) -> Item:
    """The item if `user` may see it; another user's item is indistinguishable from none."""
    item: Item | None = session.scalar(_visible_items(user).where(Item.id == item_id))
    if item is None:
        raise NotFound("Item not found.")
    return item


def create_item(*, session: Session, owner: User, data: ItemCreate) -> Item:
    item = Item(title=data.title, description=data.description, owner_id=owner.id)
    session.add(item)
    session.flush()  # INSERT ... RETURNING the server-set columns (Item's eager_defaults)
    return item


def update_item(*, session: Session, item: Item, data: ItemUpdate) -> Item:
    for field, value in data.model_dump(exclude_unset=True).items():
        setattr(item, field, value)
    session.flush()  # UPDATE ... RETURNING updated_at
    return item


def delete_item(*, session: Session, item: Item) -> None:
    session.delete(item)
    session.flush()
