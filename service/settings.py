"""The one settings object: read from the environment (and Docker secrets) once.

Components receive `Settings` or its fields; nothing else reads `os.environ`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.sizing import Sizing, SizingInputs, check, derive

DEFAULT_SECRET = "changethis-local-development-only-secret-key"
DEFAULT_DB_PASSWORDS = frozenset({"", "changethis", "postgres", "password", "sluice"})
_SECRETS_DIR = Path("/run/secrets")


# SLUICE_* variables that are not settings: the local stack's own (deploy/stack.py,
# and the stack.env it writes, which users source) and compose's interpolation.
NOT_SETTINGS = frozenset(
    {"SLUICE_STATE_DIR", "SLUICE_PORT_BASE", "SLUICE_SUPERVISOR_PID"}
    | {"SLUICE_IMAGE", "SLUICE_HTTP_BIND", "SLUICE_HTTP_PORT"}
)
_NOT_SETTINGS_PREFIXES = ("SLUICE_PID_",)
_NOT_SETTINGS_SUFFIXES = ("_URL",)


class UnknownSetting(ValueError):
    pass


def _alias(name: str) -> AliasChoices:
    """Accept both SLUICE_X and the bare name the config templates use."""
    return AliasChoices(f"SLUICE_{name}", name)


def refuse_unknown(environ: Mapping[str, str], valid: frozenset[str]) -> None:
    """A misspelt SLUICE_* variable would be ignored silently: refuse it, naming the fix."""
    unknown = sorted(
        key
        for key in environ
        if key.startswith("SLUICE_")
        and key not in valid
        and key not in NOT_SETTINGS
        and not key.startswith(_NOT_SETTINGS_PREFIXES)
        and not key.endswith(_NOT_SETTINGS_SUFFIXES)
    )
    if not unknown:
        return
    problems = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see .env.example for every setting"
        problems.append(f"{key} ({hint})")
    raise UnknownSetting("unknown setting: " + "; ".join(problems))


class _UnknownVariables(PydanticBaseSettingsSource):
    """Contributes no values; refuses SLUICE_* variables that name no setting."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        names = getattr(self.settings_cls, "environment_names", None)
        if names is not None:
            refuse_unknown(os.environ, names())
        return {}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SLUICE_",
        env_file=None,
        extra="ignore",
        secrets_dir=str(_SECRETS_DIR) if _SECRETS_DIR.is_dir() else None,
        frozen=True,
        # A refused secret must not be echoed into the logs by the error itself.
        hide_input_in_errors=True,
    )

    environment: Literal["local", "test", "staging", "production"] = "local"
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)
    access_token_expire_minutes: int = Field(default=60 * 24, ge=1)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"

    # The app talks to PgBouncer; migrations may point these at PostgreSQL.
    db_host: str = "127.0.0.1"
    db_port: int = 6432
    db_user: str = "sluice"
    db_password: SecretStr = SecretStr("sluice")
    db_name: str = "sluice"

    # Sizing inputs (docs/sizing.md).
    cpu_cores: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    db_connection_budget: int = Field(default=8, ge=1)
    target_latency_ms: int = Field(default=250, ge=1)
    request_deadline_ms: int = Field(default=5000, ge=1)
    service_time_ms: float = Field(default=50.0, gt=0)
    replicas: int = Field(default=1, ge=1)

    # Explicit overrides of derived limits; unset means "derive".
    workers: int | None = Field(default=None, ge=1)
    threadpool_tokens: int | None = Field(default=None, ge=1)
    max_in_flight: int | None = Field(default=None, ge=1)
    queue_length: int | None = Field(default=None, ge=0)
    queue_wait_ms: int | None = Field(default=None, ge=1)
    db_pool_size: int | None = Field(default=None, ge=1)
    db_max_overflow: int | None = Field(default=None, ge=0)
    db_pool_timeout_s: float | None = Field(default=None, gt=0)
    backlog: int | None = Field(default=None, ge=1)
    pgbouncer_max_client_conn: int | None = Field(
        default=None, ge=1, validation_alias=_alias("PGBOUNCER_MAX_CLIENT_CONN")
    )
    pgbouncer_default_pool_size: int | None = Field(
        default=None, ge=1, validation_alias=_alias("PGBOUNCER_DEFAULT_POOL_SIZE")
    )
    postgres_max_connections: int | None = Field(
        default=None, ge=1, validation_alias=_alias("POSTGRES_MAX_CONNECTIONS")
    )

    # Off only to measure what Sluice protects against (bench: the plain
    # deployment); never in production.
    admission_enabled: bool = True
    enforce_limits: bool = True
    admission_discipline: Literal["fifo", "lifo"] = "fifo"
    retry_after_s: int = Field(default=1, ge=1)

    # Gunicorn and metrics.
    bind_host: str = "127.0.0.1"
    bind_port: int = 8000
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9200
    metrics_multiproc_dir: Path = Path("/tmp/sluice-metrics")
    graceful_timeout_s: int = Field(default=20, ge=1)
    worker_timeout_s: int = Field(default=30, ge=1)
    keepalive_s: int = Field(default=75, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            _UnknownVariables(settings_cls),
            init_settings,
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @classmethod
    def environment_names(cls) -> frozenset[str]:
        """Every SLUICE_* variable that sets a field."""
        names = {f"SLUICE_{name.upper()}" for name in cls.model_fields}
        for field in cls.model_fields.values():
            if isinstance(field.validation_alias, AliasChoices):
                names |= {c for c in field.validation_alias.choices if isinstance(c, str)}
        return frozenset(n for n in names if n.startswith("SLUICE_"))

    @model_validator(mode="after")
    def _refuse_defaults_outside_development(self) -> Settings:
        if self.environment in ("local", "test"):
            return self
        if not self.admission_enabled:
            raise ValueError("SLUICE_ADMISSION_ENABLED=false is only allowed in local or test")
        secret = self.secret_key.get_secret_value()
        if secret == DEFAULT_SECRET or len(secret) < 32:
            raise ValueError(
                f"SLUICE_SECRET_KEY is the default or shorter than 32 characters while "
                f"SLUICE_ENVIRONMENT={self.environment}; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        if self.db_password.get_secret_value() in DEFAULT_DB_PASSWORDS:
            raise ValueError(
                f"SLUICE_DB_PASSWORD is a default password while "
                f"SLUICE_ENVIRONMENT={self.environment}; set a strong one"
            )
        return self

    @model_validator(mode="after")
    def _limits_are_consistent(self) -> Settings:
        if not self.enforce_limits:
            if self.environment in ("staging", "production"):
                raise ValueError("SLUICE_ENFORCE_LIMITS=false is only allowed in local or test")
            return self
        check(self.limits)
        return self

    @cached_property
    def limits(self) -> Sizing:
        """Derived limits with any explicit override applied."""
        derived = derive(
            SizingInputs(
                cpu_cores=self.cpu_cores,
                db_connection_budget=self.db_connection_budget,
                target_latency_ms=self.target_latency_ms,
                request_deadline_ms=self.request_deadline_ms,
                service_time_ms=self.service_time_ms,
                replicas=self.replicas,
                workers=self.workers,
                max_in_flight=self.max_in_flight,
                queue_length=self.queue_length,
            )
        )
        overrides: dict[str, Any] = {
            "threadpool_tokens": self.threadpool_tokens,
            "queue_wait_ms": self.queue_wait_ms,
            "pool_size": self.db_pool_size,
            "max_overflow": self.db_max_overflow,
            "pool_timeout_s": self.db_pool_timeout_s,
            "backlog": self.backlog,
            "pgbouncer_max_client_conn": self.pgbouncer_max_client_conn,
            "pgbouncer_default_pool_size": self.pgbouncer_default_pool_size,
            "pg_max_connections": self.postgres_max_connections,
        }
        return dataclasses.replace(derived, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def database_url(self) -> str:
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg2",
            username=self.db_user,
            password=self.db_password.get_secret_value(),
            host=self.db_host,
            port=self.db_port,
            database=self.db_name,
        ).render_as_string(hide_password=False)


@lru_cache
def get_settings() -> Settings:
    return Settings()
