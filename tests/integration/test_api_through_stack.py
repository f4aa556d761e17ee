"""The API through nginx → Gunicorn → PgBouncer → PostgreSQL, as users see it."""

from __future__ import annotations

import uuid

import httpx
import psycopg2
import pytest

from tests.api import Api
from tests.stackctl import RunningStack


def test_health_readiness_and_docs(api: Api) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
    assert api.http.get("/readyz").json() == {"status": "ready"}
    assert api.http.get("/docs").status_code == 200
    schema = api.http.get("/api/v1/openapi.json").json()
    assert "/api/v1/items/" in schema["paths"]


def test_nginx_sets_request_id_and_hides_its_version(api: Api) -> None:
    response = api.http.get("/healthz")
    assert len(response.headers["x-request-id"]) == 32
    assert response.headers["server"] == "nginx"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_full_item_lifecycle(api: Api, stack: RunningStack) -> None:
    user, headers = api.new_user()
    me = api.http.get("/api/v1/users/me", headers=headers).json()
    assert me["email"] == user["email"] and me["is_superuser"] is False

    titles = [f"item-{n}-{uuid.uuid4().hex[:6]}" for n in range(7)]
    ids = []
    for title in titles:
        created = api.http.post("/api/v1/items/", json={"title": title}, headers=headers)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])

    first = api.http.get("/api/v1/items/?skip=0&limit=5", headers=headers).json()
    second = api.http.get("/api/v1/items/?skip=5&limit=5", headers=headers).json()
    assert first["count"] == second["count"] == 7
    assert len(first["data"]) == 5 and len(second["data"]) == 2
    assert {i["id"] for i in first["data"] + second["data"]} == set(ids)

    updated = api.http.put(f"/api/v1/items/{ids[0]}", json={"title": "renamed"}, headers=headers)
    assert updated.status_code == 200 and updated.json()["title"] == "renamed"
    assert api.http.delete(f"/api/v1/items/{ids[1]}", headers=headers).status_code == 200
    assert api.http.get(f"/api/v1/items/{ids[1]}", headers=headers).status_code == 404

    with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT title FROM items WHERE id = %s", (ids[0],))
        assert cur.fetchone() == ("renamed",)
        cur.execute("SELECT count(*) FROM items WHERE id = %s", (ids[1],))
        assert cur.fetchone() == (0,)


def test_ownership_is_enforced_on_every_item_route(api: Api) -> None:
    _, alice = api.new_user()
    _, bob = api.new_user()
    item_id = api.http.post("/api/v1/items/", json={"title": "mine"}, headers=alice).json()["id"]
    for method, body in (("GET", None), ("PUT", {"title": "stolen"}), ("DELETE", None)):
        response = api.http.request(method, f"/api/v1/items/{item_id}", json=body, headers=bob)
        assert response.status_code == 404, (method, response.text)
        assert response.json()["reason"] == "not_found"
    assert api.http.get(f"/api/v1/items/{item_id}", headers=alice).json()["title"] == "mine"


@pytest.mark.parametrize(
    ("headers", "reason", "challenge"),
    [
        ({}, "unauthorized", "Bearer"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid_token", 'Bearer error="invalid_token"'),
        ({"Authorization": "Basic x"}, "unauthorized", "Bearer"),
    ],
)
def test_auth_failures_are_json_401(
    api: Api, headers: dict[str, str], reason: str, challenge: str
) -> None:
    response = api.http.get("/api/v1/items/", headers=headers)
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    # RFC 6750's challenge, through nginx: OAuth2 clients look for it.
    assert response.headers["www-authenticate"].split(",")[0] == challenge


def test_validation_failures_are_json_422(api: Api) -> None:
    _, headers = api.new_user()
    bad = api.http.post(
        "/api/v1/items/",
        content=b'{"title": ',
        headers=headers | {"Content-Type": "application/json"},
    )
    assert bad.status_code == 422 and bad.json()["reason"] == "validation_error"
    paging = api.http.get("/api/v1/items/?limit=100000", headers=headers)
    assert paging.status_code == 422


def test_not_found_and_internal_paths_are_json(api: Api, stack: RunningStack) -> None:
    missing = api.http.get("/nope")
    assert missing.status_code == 404 and missing.json()["reason"] == "not_found"
    for path in ("/metrics", "/stub_status"):
        response = api.http.get(path)
        assert response.status_code == 404, path
    # The metrics endpoint exists, but only on its internal port.
    assert httpx.get(stack.env["SLUICE_METRICS_URL"]).status_code == 200


def test_oversized_request_line_and_headers_are_json_4xx(api: Api) -> None:
    long_uri = api.http.get("/api/v1/items/?q=" + "a" * 20_000)
    assert long_uri.status_code == 414 and long_uri.json()["reason"] == "uri_too_long"
    big_header = api.http.get("/api/v1/items/", headers={"X-Big": "a" * 20_000})
    assert big_header.status_code == 400 and big_header.json()["reason"] == "bad_request"
