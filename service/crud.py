"""Database operations, keyword-only, each taking the request's session."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import Conflict, NotFound
from service.models import Item, User
from service.passwords import PasswordHasher
from service.schemas import ItemCreate, ItemUpdate, UserCreate, UserUpdate, UserUpdateMe

_UNIQUE_VIOLATION = "23505"
EMAIL_TAKEN = "A user with this email already exists."


def get_user_by_email(*, session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email.lower()))


def get_user(*, session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("User not found")
    return user


def list_users(*, session: Session, skip: int, limit: int) -> tuple[list[User], int]:
    count = session.scalar(select(func.count()).select_from(User)) or 0
    rows = session.scalars(
        select(User).order_by(User.created_at, User.id).offset(skip).limit(limit)
    ).all()
    return list(rows), count


def create_user(*, session: Session, data: UserCreate, passwords: PasswordHasher) -> User:
    # Checked before hashing: a taken email costs no hash.
    _refuse_taken_email(session=session, email=data.email, user_id=None)
    user = User(
        email=data.email.lower(),
        hashed_password=passwords.hash(data.password),
        full_name=data.full_name,
        is_active=data.is_active,
        is_superuser=data.is_superuser,
    )
    session.add(user)
    _flush_unique_email(session)
    return user


def update_user(
    *, session: Session, user: User, data: UserUpdate | UserUpdateMe, passwords: PasswordHasher
) -> User:
    changes = data.model_dump(exclude_unset=True)
    if "email" in changes:
        _refuse_taken_email(session=session, email=changes["email"], user_id=user.id)
        changes["email"] = changes["email"].lower()
    if "password" in changes:
        changes["hashed_password"] = passwords.hash(changes.pop("password"))
    for field, value in changes.items():
        setattr(user, field, value)
    _flush_unique_email(session)
    return user


def set_password(*, session: Session, user: User, password: str, passwords: PasswordHasher) -> None:
    user.hashed_password = passwords.hash(password)
    session.flush()


def delete_user(*, session: Session, user: User) -> None:
    """The user, their items and their idempotency keys, in the caller's transaction.

    The foreign keys cascade (ON DELETE CASCADE), so PostgreSQL removes the
    items in the same statement as the user; the caller's commit makes both
    visible at once, or neither.
    """
    session.delete(user)
    session.flush()


def authenticate(
    *, session: Session, email: str, password: str, passwords: PasswordHasher
) -> User | None:
    """The user if the password matches; a hash in an old format is replaced (caller commits)."""
    user = get_user_by_email(session=session, email=email)
    matches, new_hash = passwords.verify(password, user.hashed_password if user else None)
    if user is None or not matches:
        return None
    if new_hash is not None:
        user.hashed_password = new_hash
    return user


def _refuse_taken_email(*, session: Session, email: str, user_id: uuid.UUID | None) -> None:
    existing = get_user_by_email(session=session, email=email)
    if existing is not None and existing.id != user_id:
        raise Conflict(EMAIL_TAKEN)


def _flush_unique_email(session: Session) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        # Two requests with one email can both pass the check (hashing takes
        # a while); the unique index decides, and the loser gets a 409.
        if getattr(exc.orig, "pgcode", None) == _UNIQUE_VIOLATION:
            raise Conflict(EMAIL_TAKEN) from exc
        raise


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
