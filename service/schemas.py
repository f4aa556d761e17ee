"""Request and response bodies (shaped like full-stack-fastapi-template)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StrictBool

# PostgreSQL text cannot hold NUL: such a value would fail in the driver (a
# 500); the pattern refuses it up front and tells clients in the schema.
NO_NUL = r"^[^\x00]*$"


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


def _utf8(value: str) -> str:
    # JSON can carry a lone surrogate ("\ud800"), which no UTF-8 byte string
    # holds: hashing it or storing it would fail with a 500.
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from exc
    return value


Password = Annotated[str, Field(min_length=8, max_length=128), AfterValidator(_utf8)]
FullName = Annotated[str, Field(max_length=255, pattern=NO_NUL), AfterValidator(_utf8)]
Email = Annotated[EmailStr, Field(max_length=255)]


class UserRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: Password
    full_name: FullName | None = None


class UserCreate(UserRegister):
    """What a superuser may set on a new user (POST /users/)."""

    # Strict: JSON true/false only, as the schema says (0 or "no" would pass as false).
    is_active: StrictBool = True
    is_superuser: StrictBool = False


class UserUpdate(BaseModel):
    """PATCH /users/{id} (superusers): every field may be left out, none may be null."""

    model_config = ConfigDict(extra="forbid")

    email: Email = Field(default=None)  # type: ignore[assignment]
    password: Password = Field(default=None)  # type: ignore[assignment]
    full_name: FullName | None = None
    is_active: StrictBool = Field(default=None)  # type: ignore[assignment]
    is_superuser: StrictBool = Field(default=None)  # type: ignore[assignment]


class UserUpdateMe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email = Field(default=None)  # type: ignore[assignment]
    full_name: FullName | None = None


class UpdatePassword(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: Password
    new_password: Password


class NewPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(max_length=2048)
    new_password: Password


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: EmailStr
    full_name: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime | None = None


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


class ItemCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=255, pattern=NO_NUL)
    description: str | None = Field(default=None, max_length=1024, pattern=NO_NUL)


class ItemUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # May be left out, but not null: the column is NOT NULL (null was a 500).
    title: str = Field(default=None, min_length=1, max_length=255, pattern=NO_NUL)  # type: ignore[assignment]
    description: str | None = Field(default=None, max_length=1024, pattern=NO_NUL)


class ItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    description: str | None
    owner_id: uuid.UUID
    created_at: datetime
    updated_at: datetime


class ItemsPublic(BaseModel):
    data: list[ItemPublic]
    count: int


class Message(BaseModel):
    message: str


class UnprocessableBody(BaseModel):
    """422: validation errors (a list), or an Idempotency-Key reused (a string)."""

    detail: str | list[dict[str, Any]]
    reason: str


class ErrorBody(BaseModel):
    detail: str
    reason: str
