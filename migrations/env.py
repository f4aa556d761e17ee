"""Alembic environment: the database comes from the settings object.

After the migrations, in the same transaction and under the same lock, the
first superuser is created if configured and missing (service/bootstrap.py),
so every shape that migrates (compose's `migrate`, the Kubernetes Job, the
local stack) bootstraps it too.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from service.bootstrap import ensure_first_superuser
from service.models import Base
from service.settings import get_settings

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations_online() -> None:
    settings = config.attributes.get("settings") or get_settings()
    url = config.attributes.get("database_url") or settings.database_url
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            # Two migrators started at once (replicas, a re-run) take turns.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(74656163)")
            context.run_migrations()
            # `alembic current` (dont_mutate) changes nothing.
            if not context.get_context().opts.get("dont_mutate"):
                ensure_first_superuser(connection=connection, settings=settings)


run_migrations_online()
