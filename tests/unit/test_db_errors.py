"""Database waits are bounded and become 503 + Retry-After, never a 500."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, select, text
from sqlalchemy import exc as sa_exc

from service import db, transactions
from service.db import create_session_factory
from service.error_handlers import classify_db_error
from service.errors import CommitOutcomeUnknown, DatabaseUnavailable
from service.main import create_app
from service.models import User
from service.settings import Settings


@pytest.fixture
def one_connection_client(unit_settings: Settings) -> Iterator[TestClient]:
    settings = Settings(
        **unit_settings.model_dump(
            include={"environment", "db_host", "db_port", "db_user", "db_name"}
        ),
        max_in_flight=1,
        db_pool_timeout_s=0.2,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    with app.state.engine.begin() as conn:
        conn.execute(delete(User).where(User.email.like("pool-%@example.com")))
    app.state.engine.dispose()


def test_pool_timeout_is_503_with_retry_after(one_connection_client: TestClient) -> None:
    client = one_connection_client
    email = f"pool-{uuid.uuid4().hex[:8]}@example.com"
    assert (
        client.post("/api/v1/users/signup", json={"email": email, "password": "x" * 12}).status_code
        == 201
    )
    token = client.post(
        "/api/v1/login/access-token", data={"username": email, "password": "x" * 12}
    ).json()["access_token"]
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as held:  # the pool's only connection, held by a busy request
        response = client.get("/api/v1/items/", headers={"Authorization": f"Bearer {token}"})
        held.execute(text("SELECT 1"))  # ... whose statements keep succeeding
        ready = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["reason"] == "db_pool_timeout"
    # Busy is not unready: a saturated pool whose statements succeed is ready.
    assert ready.status_code == 200, ready.text
    after = client.get("/api/v1/items/", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 200


def test_unreachable_database_is_503_not_500(unit_settings: Settings) -> None:
    settings = Settings(
        environment="test", db_host="127.0.0.1", db_port=1, db_name="nope", retry_after_s=4
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(
            "/api/v1/login/access-token", data={"username": "a@example.com", "password": "x"}
        )
        ready = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "db_unavailable"
    assert "psycopg2" not in response.text and "Traceback" not in response.text
    assert ready.status_code == 503 and ready.json()["reason"] == "db_unavailable"
    assert response.headers["retry-after"] == ready.headers["retry-after"] == "4"


def _terminate(engine: Engine, pid: int) -> None:
    with engine.connect() as other:
        assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()


def _stored(engine: Engine, email: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(select(User.id).where(User.email == email)).first()
    return found is not None


def test_connection_lost_before_commit_is_not_applied(engine: Engine) -> None:
    """Lost before COMMIT: the usual 503 db_unavailable, and the row is not there."""
    email = f"lost-{uuid.uuid4().hex[:8]}@example.com"
    with create_session_factory(engine)() as session:
        _terminate(engine, session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        session.add(User(email=email, hashed_password="x"))
        with pytest.raises(sa_exc.SQLAlchemyError) as caught:
            transactions.commit(session)
    assert not isinstance(caught.value, CommitOutcomeUnknown)
    assert isinstance(classify_db_error(caught.value), DatabaseUnavailable)
    assert not _stored(engine, email)


def test_connection_lost_at_commit_is_reported_as_unknown(engine: Engine) -> None:
    """Lost once the writes were sent: the app cannot know whether COMMIT landed, and says so."""
    email = f"lost-{uuid.uuid4().hex[:8]}@example.com"
    with create_session_factory(engine)() as session:
        session.add(User(email=email, hashed_password="x"))
        session.flush()
        _terminate(engine, session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        with pytest.raises(CommitOutcomeUnknown) as caught:
            transactions.commit(session)
    assert caught.value.status_code == 503 and caught.value.retryable
    assert "may or may not" in caught.value.detail
    # Here the server died before COMMIT arrived: "unknown" errs on the safe side.
    assert not _stored(engine, email)


def _pool_backend_pid(app: object) -> int:
    engine = app.state.engine  # type: ignore[attr-defined]
    pool = engine.pool
    record = pool._pool.queue[0]  # the pool's one idle connection
    cursor = record.dbapi_connection.cursor()
    cursor.execute("SELECT pg_backend_pid()")
    pid: int = cursor.fetchone()[0]
    cursor.close()
    record.dbapi_connection.rollback()
    return pid


def test_a_connection_that_died_in_the_pool_costs_at_most_one_retry(
    one_connection_client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ping per checkout: a connection killed between two busy uses fails one request
    with an honest 503 (never a 500), and the next is served; one idle for longer than
    PING_AFTER_IDLE_S is pinged first and replaced, at no cost to the request."""
    client = one_connection_client
    email = f"pool-{uuid.uuid4().hex[:8]}@example.com"
    assert client.post(
        "/api/v1/users/signup", json={"email": email, "password": "x" * 12}
    ).is_success
    token = client.post(
        "/api/v1/login/access-token", data={"username": email, "password": "x" * 12}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/items/", headers=headers).status_code == 200

    # Busy: the connection was used a moment ago, so it is not pinged.
    _terminate(engine, _pool_backend_pid(client.app))
    failed = client.get("/api/v1/items/", headers=headers)
    assert failed.status_code == 503, failed.text
    assert failed.json()["reason"] == "db_unavailable"
    assert failed.headers["retry-after"]
    assert client.get("/api/v1/items/", headers=headers).status_code == 200

    # Idle: pinged on checkout, found dead, replaced: the request never sees it.
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    _terminate(engine, _pool_backend_pid(client.app))
    assert client.get("/api/v1/items/", headers=headers).status_code == 200
