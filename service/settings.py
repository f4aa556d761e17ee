"""The one settings object: read once from an environment (and Docker secrets).

`Settings.from_environ(environ)` reads exactly the mapping it is given (the
launcher, the tests and the benchmark pass the environment of the stack they
configure); `get_settings()` is that for this process's own environment.
`Settings(**fields)` takes fields by name and reads no environment at all.
Components receive `Settings` or its fields; nothing else reads `os.environ`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasGenerator, EmailStr, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.env_check import refuse_unknown
from service.env_names import env_name
from service.sizing import Sizing, SizingInputs, available_cpus, check, derive

DEFAULT_SECRET = "changethis-local-development-only-secret-key"
DEFAULT_DB_PASSWORDS = frozenset({"", "changethis", "postgres", "password", "sluice"})
DEFAULT_USER_PASSWORDS = frozenset({"changethis", "password", "12345678", "admin123"})
_SECRETS_DIR = Path("/run/secrets")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        # Every field is read from env_name(field): one rule, no per-field aliases.
        alias_generator=AliasGenerator(validation_alias=env_name),
        validate_by_name=True,
        validate_by_alias=True,
        env_file=None,
        # A misspelt field name is refused, like a misspelt variable.
        extra="forbid",
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

    # Sizing inputs (docs/sizing.md); their defaults are SizingInputs'.
    cpu_cores: int = Field(default_factory=available_cpus, ge=1)
    db_connection_budget: int = Field(default=SizingInputs.db_connection_budget, ge=1)
    target_latency_ms: int = Field(default=SizingInputs.target_latency_ms, ge=1)
    request_deadline_ms: int = Field(default=SizingInputs.request_deadline_ms, ge=1)
    service_time_ms: float = Field(default=SizingInputs.service_time_ms, gt=0)
    cpu_share: float = Field(default=SizingInputs.cpu_share, gt=0, le=1)
    replicas: int = Field(default=SizingInputs.replicas, ge=1)

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
    # A request body must arrive within this, in all (nginx's own limit resets
    # with every read; it buffers bodies, so only direct callers meet this one).
    body_timeout_s: float = Field(default=5.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Password hashing (service/passwords.py): at most this many hashes at once
    # per worker, fewer than its request slots, so hashing never holds them
    # all; a request waits at most password_hash_wait_ms for a turn, then 503.
    password_hash_concurrency: int = Field(default=1, ge=1)
    password_hash_wait_ms: int = Field(default=100, ge=0)

    # A first superuser, created when migrations run if no user has this email
    # (service/bootstrap.py). Template names, bare (service/env_names.py).
    first_superuser: EmailStr | None = None
    first_superuser_password: SecretStr | None = None

    # Mail (service/mail.py), the template's variables. No SMTP_HOST: password
    # recovery answers 503 mail_not_configured. SMTP_TLS is STARTTLS,
    # SMTP_SSL is TLS from the first byte (port 465).
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls: bool = True
    smtp_ssl: bool = False
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    emails_from_email: EmailStr | None = None
    emails_from_name: str = "Sluice"
    # One message, connect to QUIT, never holds a request slot longer than
    # this (nor past the request's deadline); at most mail_concurrency
    # conversations per worker, a turn waited for at most mail_wait_ms.
    mail_timeout_s: float = Field(default=3.0, gt=0, le=30)
    mail_concurrency: int = Field(default=1, ge=1)
    mail_wait_ms: int = Field(default=100, ge=0)
    # Password-reset links: <frontend_host>/reset-password?token=..., valid this long.
    frontend_host: str = "http://localhost:5173"
    email_reset_token_expire_hours: int = Field(default=48, ge=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No environment source: from_environ reads the mapping it is given.
        return (init_settings, file_secret_settings)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, secrets_dir: Path | None = None
    ) -> Settings:
        """The settings `environ` sets (and the files in `secrets_dir`), nothing else.

        A name under a settings prefix that is neither a setting nor a known
        variable is refused with the closest valid name (service/env_check.py).
        A variable wins over a secret file of the same setting.
        """
        refuse_unknown(environ, cls.environment_names())
        values: dict[str, Any] = {
            name: environ[env_name(name)] for name in cls.model_fields if env_name(name) in environ
        }
        return cls(_secrets_dir=secrets_dir, **values)

    @classmethod
    def environment_names(cls) -> frozenset[str]:
        """Every variable that sets a field."""
        return frozenset(env_name(name) for name in cls.model_fields)

    @field_validator(
        "first_superuser",
        "first_superuser_password",
        "smtp_host",
        "smtp_user",
        "smtp_password",
        "emails_from_email",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # compose's ${VAR:-} passes an empty string for "not set".
        return None if value == "" else value

    @model_validator(mode="after")
    def _mail_and_superuser_are_complete(self) -> Settings:
        if self.smtp_tls and self.smtp_ssl:
            raise ValueError(
                "SMTP_TLS (STARTTLS) and SMTP_SSL (TLS from the first byte) exclude each "
                "other; set one of them to false"
            )
        if self.smtp_host and not self.emails_from_email:
            raise ValueError("SMTP_HOST is set but EMAILS_FROM_EMAIL is not; set the sender")
        if self.first_superuser and self.first_superuser_password is None:
            raise ValueError("FIRST_SUPERUSER is set but FIRST_SUPERUSER_PASSWORD is not")
        password = self.first_superuser_password
        if password is not None and len(password.get_secret_value()) < 8:
            raise ValueError("FIRST_SUPERUSER_PASSWORD must have at least 8 characters")
        return self

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
        password = self.first_superuser_password
        if password is not None and password.get_secret_value() in DEFAULT_USER_PASSWORDS:
            raise ValueError(
                f"FIRST_SUPERUSER_PASSWORD is a default password while "
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

    @model_validator(mode="after")
    def _hashing_and_mail_leave_a_slot(self) -> Settings:
        slots = self.limits.max_in_flight
        if not self.enforce_limits or slots == 1:
            return self  # one slot: hashing must be able to take it
        for name in ("password_hash_concurrency", "mail_concurrency"):
            if getattr(self, name) >= slots:
                raise ValueError(
                    f"{env_name(name)}={getattr(self, name)} would let it hold every request "
                    f"slot of a worker (SLUICE_MAX_IN_FLIGHT={slots}); set it below {slots}"
                )
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
    """This process's settings: its environment and Docker secrets, read once."""
    return Settings.from_environ(
        os.environ, secrets_dir=_SECRETS_DIR if _SECRETS_DIR.is_dir() else None
    )
