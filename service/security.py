"""Access tokens and password-reset tokens (PyJWT). Hashing is service/passwords.py."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

import jwt

from service.errors import BadRequest, Unauthorized
from service.settings import Settings

# A reset token is no access token and the reverse: access tokens carry no
# audience (PyJWT then refuses any token that has one), reset tokens this one.
RESET_AUDIENCE = "sluice:password-reset"


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


def create_password_reset_token(
    *, user_id: uuid.UUID, hashed_password: str, settings: Settings
) -> str:
    """A signed token for one password reset, valid EMAIL_RESET_TOKEN_EXPIRE_HOURS.

    It names the password it may replace (`pwd`, a keyed fingerprint of the
    current hash), so it stops working once the password changed: after its
    first use, or a login that upgraded the hash.
    """
    now = datetime.now(UTC)
    payload = {
        "sub": str(user_id),
        "aud": RESET_AUDIENCE,
        "nbf": now,
        "exp": now + timedelta(hours=settings.email_reset_token_expire_hours),
        "pwd": password_fingerprint(hashed_password, settings=settings),
    }
    return jwt.encode(
        payload, settings.secret_key.get_secret_value(), algorithm=settings.jwt_algorithm
    )


def decode_password_reset_token(token: str, *, settings: Settings) -> tuple[uuid.UUID, str]:
    """(user id, password fingerprint) of a valid reset token; anything else is a 400."""
    try:
        payload = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[settings.jwt_algorithm],
            audience=RESET_AUDIENCE,
            options={"require": ["exp", "sub", "aud", "pwd"]},
        )
        return uuid.UUID(str(payload["sub"])), str(payload["pwd"])
    except jwt.ExpiredSignatureError as exc:
        raise BadRequest("Invalid token", reason="token_expired") from exc
    except (jwt.PyJWTError, ValueError) as exc:
        raise BadRequest("Invalid token", reason="invalid_token") from exc


def password_fingerprint(hashed_password: str, *, settings: Settings) -> str:
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, hashed_password.encode(), hashlib.sha256).hexdigest()[:32]
