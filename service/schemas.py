"""Request and response bodies (shaped like full-stack-fastapi-template)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field

# PostgreSQL text cannot hold NUL: such a value would fail in the driver (a
# 500); the pattern refuses it up front and tells clients in the schema.
NO_NUL = r"^[^\x00]*$"


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


class UserRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr = Field(max_length=255)
    password: str = Field(min_length=8, max_length=128)
    full_name: str | None = Field(default=None, max_length=255, pattern=NO_NUL)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: EmailStr
    full_name: str | None
    is_active: bool
    is_superuser: bool


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
