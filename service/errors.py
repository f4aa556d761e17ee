"""Sluice's exceptions: each carries its status, a reason and what to do next."""

from __future__ import annotations


class SluiceError(Exception):
    status_code = 500
    reason = "internal_error"
    detail = "Internal error; the request was not applied. Retry later."
    # Retryable errors carry a Retry-After header (SLUICE_RETRY_AFTER_S).
    retryable = False

    def __init__(self, detail: str | None = None, *, reason: str | None = None) -> None:
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail
        if reason is not None:
            self.reason = reason

    def headers(self) -> dict[str, str]:
        """Headers this answer carries besides Retry-After."""
        return {}


class NotFound(SluiceError):
    status_code = 404
    reason = "not_found"
    detail = "Not found."


class Unauthorized(SluiceError):
    """401 with RFC 6750's challenge, which OAuth2 clients look for.

    `token_sent`: a bearer token came and was refused (error="invalid_token",
    whatever the reason: expired, forged, unknown user); without one, the bare
    challenge, as the RFC asks of a request that did not try.
    """

    status_code = 401
    reason = "unauthorized"
    detail = "Could not validate credentials."

    def __init__(
        self, detail: str | None = None, *, reason: str | None = None, token_sent: bool = True
    ) -> None:
        super().__init__(detail, reason=reason)
        self.token_sent = token_sent

    def headers(self) -> dict[str, str]:
        if not self.token_sent:
            return {"WWW-Authenticate": "Bearer"}
        # error_description allows printable ASCII but '"' and '\\' (RFC 6750 3).
        description = "".join(c for c in self.detail if " " <= c <= "~" and c not in '"\\')
        return {
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'
        }


class Forbidden(SluiceError):
    status_code = 403
    reason = "forbidden"
    detail = "Not enough privileges."


class Conflict(SluiceError):
    status_code = 409
    reason = "conflict"
    detail = "Conflict."


class IdempotencyMismatch(SluiceError):
    status_code = 422
    reason = "idempotency_key_reused"
    detail = (
        "This Idempotency-Key was already used with a different request; "
        "use a new key for a new request."
    )


class NotReady(SluiceError):
    """/readyz: this process should not get new traffic now (draining, no database)."""

    status_code = 503
    reason = "not_ready"
    detail = "Not ready to take traffic."
    retryable = True


class Overloaded(SluiceError):
    """503 + Retry-After: not applied, safe to retry. `layer` says who refused.

    CommitOutcomeUnknown is the one exception, and its detail says so.
    """

    status_code = 503
    reason = "overloaded"
    detail = "Service overloaded; the request was not applied. Retry after the Retry-After delay."
    layer = "app"
    retryable = True


class DeadlineExceeded(Overloaded):
    reason = "deadline_exceeded"
    detail = "The request ran out of time before it could be applied. Retry later."


class StatementTimeout(Overloaded):
    layer = "db"
    reason = "statement_timeout"
    detail = "The database did not answer within the request's deadline; retry later."


class PoolTimeout(Overloaded):
    layer = "pool"
    reason = "db_pool_timeout"
    detail = "No database connection became free in time; retry later."


class PgBouncerWaitTimeout(Overloaded):
    layer = "pgbouncer"
    reason = "pgbouncer_wait_timeout"
    detail = "PgBouncer had no server connection free in time; retry later."


class DatabaseUnavailable(Overloaded):
    layer = "db"
    reason = "db_unavailable"
    detail = "The database is unavailable; the request was not applied. Retry later."


class CommitOutcomeUnknown(Overloaded):
    """The connection was lost during COMMIT: applied or not, nobody here knows."""

    layer = "db"
    reason = "commit_outcome_unknown"
    detail = (
        "The database connection was lost while committing: the write may or may not have "
        "been applied. Retry with the same Idempotency-Key, which applies it at most once."
    )


class BadRequest(SluiceError):
    status_code = 400
    reason = "bad_request"
    detail = "Bad request."


class HashingBusy(Overloaded):
    """Every password-hashing turn of this worker is taken (service/passwords.py)."""

    reason = "hashing_busy"
    detail = (
        "Too many password checks are running here; nothing was changed. "
        "Retry after the Retry-After delay."
    )


class MailBusy(Overloaded):
    layer = "mail"
    reason = "mail_busy"
    detail = (
        "Too many emails are being sent here; nothing was sent or changed. "
        "Retry after the Retry-After delay."
    )


class MailUnavailable(Overloaded):
    layer = "mail"
    reason = "mail_unavailable"
    detail = (
        "The mail server could not be reached or did not answer in time; nothing was sent "
        "or changed. Retry later."
    )


class MailNotConfigured(SluiceError):
    """No SMTP server is configured: an operator's fix, not the client's."""

    status_code = 503
    reason = "mail_not_configured"
    detail = (
        "This server cannot send email (SMTP_HOST and EMAILS_FROM_EMAIL are not set); "
        "ask its operator."
    )
    retryable = True
