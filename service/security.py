"""Password hashing (argon2 via pwdlib) and access tokens (PyJWT)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from service.errors import Unauthorized
from service.settings import Settings

_password_hash = PasswordHash((Argon2Hasher(),))
# A valid hash to verify against when the user does not exist, so that a
# missing account takes as long as a wrong password.
_DUMMY_HASH = _password_hash.hash("sluice-timing-equaliser")


def hash_password(password: str) -> str:
    return _password_hash.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    if hashed is None:
        _password_hash.verify(password, _DUMMY_HASH)
        return False
    return _password_hash.verify(password, hashed)


def create_access_token(*, subject: uuid.UUID, settings: Settings) -> str:
    expire = datetime.now(UTC) + timedelta(minutes=settings.access_token_expire_minutes)
    payload = {"sub": str(subject), "exp": expire}
    return jwt.encode(
        payload, settings.secret_key.get_secret_value(), algorithm=settings.jwt_algorithm
    )


def decode_access_token(token: str, *, settings: Settings) -> uuid.UUID:
    """The user id in a valid token; forged, expired and `alg: none` tokens raise 401."""
    try:
        payload = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            # Only the configured algorithm: this refuses "none" and key confusion.
            algorithms=[settings.jwt_algorithm],
            options={"require": ["exp", "sub"]},
        )
        return uuid.UUID(str(payload["sub"]))
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The token has expired; log in again.", reason="token_expired") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise Unauthorized(
            f"The token is not signed with {settings.jwt_algorithm}; log in again.",
            reason="token_algorithm_refused",
        ) from exc
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(
            f"The token lacks the {exc.claim!r} claim; log in again.",
            reason="token_claim_missing",
        ) from exc
    except (jwt.PyJWTError, ValueError) as exc:
        raise Unauthorized(reason="invalid_token") from exc
