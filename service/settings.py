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

from pydantic import AliasGenerator, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.env_names import env_name
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


# Settings that one limit replaced; the close-match hint would point elsewhere.
REMOVED = {
    "SLUICE_DB_POOL_SIZE": "SLUICE_MAX_IN_FLIGHT sets the pool size",
    "SLUICE_THREADPOOL_TOKENS": "SLUICE_MAX_IN_FLIGHT sets the threadpool size",
}


class UnknownSetting(ValueError):
    pass


def refuse_unknown(environ: Mapping[str, str], valid: frozenset[str]) -> None:
    """A misspelt or removed SLUICE_* variable would be ignored: refuse it, naming the fix."""
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
        if key in REMOVED:
            hint = f"removed: {REMOVED[key]}"
        elif close:
            hint = f"did you mean {close[0]}?"
        else:
            hint = "see .env.example for every setting"
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
        # Every field is read from env_name(field): one rule, no per-field aliases.
        alias_generator=AliasGenerator(validation_alias=env_name),
        validate_by_name=True,
        validate_by_alias=True,
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
    cpu_share: float = Field(default=0.5, gt=0, le=1)
    replicas: int = Field(default=1, ge=1)

    # Explicit overrides of derived limits, named as the Sizing fields they
    # replace; unset means "derive".
    workers: int | None = Field(default=None, ge=1)
    max_in_flight: int | None = Field(default=None, ge=1)
    queue_length: int | None = Field(default=None, ge=0)
    queue_wait_ms: int | None = Field(default=None, ge=1)
    standing_interval_ms: int | None = Field(default=None, ge=1)
    db_max_overflow: int | None = Field(default=None, ge=0)
    db_pool_timeout_s: float | None = Field(default=None, gt=0)
    backlog: int | None = Field(default=None, ge=1)
    pgbouncer_default_pool_size: int | None = Field(default=None, ge=1)
    pgbouncer_max_client_conn: int | None = Field(default=None, ge=1)
    pgbouncer_query_wait_timeout: int | None = Field(default=None, ge=1)
    postgres_max_connections: int | None = Field(default=None, ge=1)
    nginx_rate_per_client: int | None = Field(default=None, ge=1)
    nginx_burst_per_client: int | None = Field(default=None, ge=0)
    nginx_max_conns: int | None = Field(default=None, ge=1)
    nginx_slots: int | None = Field(default=None, ge=1)
    nginx_max_conns_per_client: int | None = Field(default=None, ge=1)
    nginx_max_conns_per_address: int | None = Field(default=None, ge=1)
    nginx_proxy_read_timeout: int | None = Field(default=None, ge=1)

    # Off only to measure what Sluice protects against (bench: the plain
    # deployment); never in production.
    admission_enabled: bool = True
    enforce_limits: bool = True
    admission_discipline: Literal["fifo", "lifo"] = "fifo"
    retry_after_s: int = Field(default=1, ge=1)

    # Gunicorn and metrics.
    bind_host: str = "127.0.0.1"
    bind_port: int = 8000
    # /healthz and /readyz for probes, beside the app port: the app port
    # accepts only while a worker has a slot free (service/accept_gate.py),
    # and a busy worker must still answer its probes.
    probe_port: int = 8001
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
        """Every variable that sets a field."""
        return frozenset(env_name(name) for name in cls.model_fields)

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
    def _ports_differ(self) -> Settings:
        ports = {"bind_port": self.bind_port, "probe_port": self.probe_port}
        ports["metrics_port"] = self.metrics_port
        if len(set(ports.values())) < len(ports):
            names = ", ".join(f"{env_name(k)}={v}" for k, v in ports.items())
            raise ValueError(f"the app, probe and metrics ports must differ: {names}")
        return self

    @model_validator(mode="after")
    def _limits_are_consistent(self) -> Settings:
        if not self.enforce_limits:
            if self.environment in ("staging", "production"):
                raise ValueError("SLUICE_ENFORCE_LIMITS=false is only allowed in local or test")
            return self
        check(self.limits, replicas=self.replicas)
        return self

    @cached_property
    def limits(self) -> Sizing:
        """Derived limits with any explicit override applied."""
        derived = derive(
            SizingInputs(
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(SizingInputs)}
            )
        )
        overrides = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(Sizing)
            if getattr(self, f.name) is not None
        }
        return dataclasses.replace(derived, **overrides)

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
