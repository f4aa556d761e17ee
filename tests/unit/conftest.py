"""Unit tests run the app in-process against the stack's real PostgreSQL.

A dedicated database is migrated once per session; every test runs inside an
outer transaction that is rolled back, with the app's sessions joining it
through savepoints, so tests never see each other's rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service.db import create_session_factory
from service.main import create_app
from service.settings import Settings
from tests.stackctl import ROOT, RunningStack

UNIT_DB = "sluice_unit"


@pytest.fixture(scope="session")
def unit_db_url(stack: RunningStack) -> str:
    admin_url = make_url(stack.database_url).set(drivername="postgresql+psycopg2")
    admin = create_engine(admin_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{UNIT_DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{UNIT_DB}"'))
    admin.dispose()
    url = admin_url.set(database=UNIT_DB).render_as_string(hide_password=False)
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")
    return url


@pytest.fixture(scope="session")
def unit_settings(unit_db_url: str) -> Settings:
    url = make_url(unit_db_url)
    return Settings(
        environment="test",
        db_host=url.host or "127.0.0.1",
        db_port=url.port or 5432,
        db_user=url.username or "postgres",
        db_name=UNIT_DB,
    )


@pytest.fixture(scope="session")
def engine(unit_db_url: str) -> Iterator[Engine]:
    engine = create_engine(unit_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection in an outer transaction, rolled back after the test."""
    with engine.connect() as conn:
        outer = conn.begin()
        yield conn
        outer.rollback()


@pytest.fixture
def session(connection: Connection) -> Iterator[Session]:
    factory = create_session_factory(connection, join_transaction_mode="create_savepoint")
    with factory() as session:
        yield session


@pytest.fixture
def app(unit_settings: Settings, connection: Connection) -> FastAPI:
    application = create_app(unit_settings)
    application.state.session_factory = create_session_factory(
        connection, join_transaction_mode="create_savepoint"
    )
    return application


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
