"""The seed's failure, reproduced, and Sluice's one-session-per-request rule passing.

The naive pattern: the current-user dependency opens and closes its own
session. The endpoint then commits in another session and touches the user:
the object is detached (its session is gone), so lazy attributes fail.
"""

# No `from __future__ import annotations`: FastAPI must resolve the nested
# endpoint's Annotated dependencies at definition time.
from collections.abc import Iterator
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import DetachedInstanceError

from service.models import Item, User
from service.passwords import hash_password


@pytest.fixture
def owner(engine: Engine) -> Iterator[User]:
    """A committed user with one item (the naive app needs committed rows)."""
    with Session(engine, expire_on_commit=False) as session:
        user = User(email="seed-owner@example.com", hashed_password=hash_password("x" * 12))
        session.add(user)
        session.flush()
        session.add(Item(title="seed", owner_id=user.id))
        session.commit()
    yield user
    with Session(engine) as session:
        session.delete(session.get(User, user.id))
        session.commit()


def _naive_app(engine: Engine, user_id: object) -> FastAPI:
    factory = sessionmaker(bind=engine)
    app = FastAPI()

    def get_db() -> Iterator[Session]:
        with factory() as session:
            yield session

    def current_user() -> User:
        # Its own session, closed on return: the seed's bug.
        with factory() as session:
            user = session.get(User, user_id)
            assert user is not None
            return user

    @app.post("/touch")
    def touch(
        db: Annotated[Session, Depends(get_db)], user: Annotated[User, Depends(current_user)]
    ) -> dict[str, int]:
        db.add(Item(title="new", owner_id=user.id))
        db.commit()
        return {"items": len(user.items)}

    return app


def test_naive_dependency_session_detaches_the_user(engine: Engine, owner: User) -> None:
    client = TestClient(_naive_app(engine, owner.id), raise_server_exceptions=True)
    with pytest.raises(DetachedInstanceError):
        client.post("/touch")


def test_sluice_shares_one_session_so_the_user_stays_usable(
    client: TestClient, session: Session
) -> None:
    email = "one-session@example.com"
    signup = client.post("/api/v1/users/signup", json={"email": email, "password": "x" * 12})
    assert signup.status_code == 201
    token = client.post(
        "/api/v1/login/access-token", data={"username": email, "password": "x" * 12}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    # create_item commits, then reads current_user.id again for the response's owner_id.
    created = client.post("/api/v1/items/", json={"title": "after commit"}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["owner_id"] == signup.json()["id"]
    user = session.scalar(select(User).where(User.email == email))
    assert user is not None and [i.title for i in user.items] == ["after commit"]


def test_the_current_user_and_the_endpoint_get_the_same_session(
    app: FastAPI, client: TestClient
) -> None:
    from service.api.deps import CurrentUser, SessionDep

    @app.get("/probe-session")
    def probe(session: SessionDep, user: CurrentUser) -> dict[str, bool]:
        return {"same": user in session}

    email = "probe@example.com"
    client.post("/api/v1/users/signup", json={"email": email, "password": "x" * 12})
    token = client.post(
        "/api/v1/login/access-token", data={"username": email, "password": "x" * 12}
    ).json()["access_token"]
    response = client.get("/probe-session", headers={"Authorization": f"Bearer {token}"})
    assert response.json() == {"same": True}


def test_requests_that_never_touch_the_database_check_out_no_connection(
    client: TestClient, app: FastAPI
) -> None:
    pool = app.state.engine.pool
    before = pool.checkedout()
    assert client.get("/healthz").status_code == 200
    # A rejected request (no token) never uses its session either.
    assert client.get("/api/v1/items/").status_code == 401
    assert pool.checkedout() == before
