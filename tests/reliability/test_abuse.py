"""Bad input and abuse through nginx, on the edge stack (port base 27200)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg2
import pytest

from service.passwords import hash_password
from tests.reliability.conftest import committed_items, login, new_user, record, signup
from tests.reliability.load import LEAK_MARKERS
from tests.stackctl import RunningStack

pytestmark = pytest.mark.stack

ITEMS = "/api/v1/items/"


def assert_clean_error(response: httpx.Response, status: int | tuple[int, ...]) -> None:
    """An error answer: the expected status, a JSON reason, nothing internal."""
    expected = status if isinstance(status, tuple) else (status,)
    assert response.status_code in expected, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert response.json()["reason"]
    assert not any(marker in response.text.lower() for marker in LEAK_MARKERS), response.text


def _schemathesis(
    stack: RunningStack, tmp_path: Path, token: str, *selection: str
) -> subprocess.CompletedProcess[str]:
    """`st run` through nginx with `token`, bounded: a fixed seed, 25 examples per operation.

    Checks: no 5xx, responses conform to the schema (content type and body),
    and invalid data is rejected with a 4xx. No stateful phase.
    """
    st = shutil.which("st") or str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "st")
    return subprocess.run(
        [
            st,
            "run",
            f"{stack.url}/api/v1/openapi.json",
            "--url",
            stack.url,
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,response_schema_conformance,"
            "content_type_conformance,negative_data_rejection",
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-database",
            "none",
            "--seed",
            "1",
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--no-color",
            *selection,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_schemathesis_finds_no_server_error(edge_stack: RunningStack, tmp_path: Path) -> None:
    """Generated valid and invalid requests for every operation, through nginx, as a user.

    DELETE /users/me is left out: once it succeeds, every later request is a
    401 and nothing else gets tested (its own tests: test_users*). The
    form-encoded login and the password-recovery routes are in the run.
    """
    _, token = new_user(edge_stack.url)
    started = time.monotonic()
    result = _schemathesis(
        edge_stack,
        tmp_path,
        token,
        "--exclude-operation-id",
        "delete_user_me_api_v1_users_me_delete",
    )
    record("schemathesis", exit_code=result.returncode, seconds=time.monotonic() - started)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    schema = httpx.get(f"{edge_stack.url}/api/v1/openapi.json", timeout=10).json()
    assert "application/x-www-form-urlencoded" in str(
        schema["paths"]["/api/v1/login/access-token"]["post"]["requestBody"]
    )


def test_schemathesis_as_a_superuser_finds_no_server_error(
    edge_stack: RunningStack, tmp_path: Path
) -> None:
    """The user administration and recovery routes past their 403s, as a superuser.

    A superuser of its own (the fuzzer may change whatever it can reach,
    this account's password included), inserted as the bootstrap would.
    """
    email, password = f"fuzz-root-{uuid.uuid4().hex[:8]}@example.com", "fuzz-root-password"
    with psycopg2.connect(edge_stack.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO users (id, email, hashed_password, is_active, is_superuser)"
            " VALUES (%s, %s, %s, true, true)",
            (str(uuid.uuid4()), email, hash_password(password)),
        )
    conn.close()
    token = login(edge_stack.url, email, password)
    started = time.monotonic()
    result = _schemathesis(
        edge_stack,
        tmp_path,
        token,
        "--include-path-regex",
        "^/api/v1/(users|login|password-recovery|reset-password)",
    )
    record(
        "schemathesis as superuser", exit_code=result.returncode, seconds=time.monotonic() - started
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # It never got to delete itself (403), so the token still works.
    me = httpx.get(
        f"{edge_stack.url}/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert me.status_code == 200 and me.json()["is_superuser"] is True


def test_a_nul_byte_in_the_login_form_is_a_clear_4xx(edge_stack: RunningStack) -> None:
    """Issue 22 A4: `username=a%00b` was a 500 (psycopg2 refuses NUL in text)."""
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        response = http.post(
            "/api/v1/login/access-token",
            content=b"username=a%00b&password=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert_clean_error(response, (422, 429))


def test_oversized_body_is_refused_by_nginx(edge_stack: RunningStack) -> None:
    _, token = new_user(edge_stack.url)
    headers = {"Authorization": f"Bearer {token}"}
    body = '{"title": "' + "x" * 100_000 + '"}'
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        response = http.post(ITEMS, content=body, headers=headers)
        assert_clean_error(response, 413)
        assert response.json()["layer"] == "nginx"

        def chunks() -> object:
            for _ in range(100):
                yield b"x" * 1024

        chunked = http.post(ITEMS, content=chunks(), headers=headers)  # type: ignore[arg-type]
        assert_clean_error(chunked, 413)


def test_oversized_and_too_many_headers_are_refused_by_nginx(edge_stack: RunningStack) -> None:
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        big = http.get("/healthz", headers={"X-Big": "a" * 16_000})
        assert_clean_error(big, (400, 431))
        many = http.get("/healthz", headers={f"X-H{n}": "b" * 1000 for n in range(64)})
        assert_clean_error(many, (400, 431))
        assert big.json()["layer"] == many.json()["layer"] == "nginx"


SLOW_ADDRESS = "127.0.5.1"  # the slow clients' host; the honest client is 127.0.0.1


def _slow_client(
    port: int,
    request: bytes,
    results: list[tuple[float, bytes]],
    *,
    trickle_s: float = 0.0,
) -> None:
    """Send `request` then stall (or trickle a byte a second for `trickle_s`); record when
    nginx first answered or hung up, and what it sent."""
    start = time.monotonic()
    answered = None
    with socket.create_connection(
        ("127.0.0.1", port), timeout=30, source_address=(SLOW_ADDRESS, 0)
    ) as sock:
        sock.sendall(request)
        data = b""
        while time.monotonic() - start < trickle_s:
            time.sleep(1.0)
            try:
                sock.sendall(b" ")
            except OSError:
                break
        try:
            while chunk := sock.recv(4096):
                answered = answered or time.monotonic()
                data += chunk
        except OSError:
            pass
    results.append(((answered or time.monotonic()) - start, data))


def test_slow_clients_are_cut_off_without_reaching_the_app(edge_stack: RunningStack) -> None:
    """Slow-header and slow-body clients: nginx hangs up after its client timeouts.

    Meanwhile another client's requests are served at once: nginx reads the
    whole request before it connects to the app, and the app's cap counts
    those connections (the upstream's max_conns), so a stalled body holds no
    place in it. One address's requests still count against its own limits,
    so its stalled bodies beyond its share while saturated
    (NGINX_MAX_CONNS_PER_CLIENT) are refused at once.
    """
    _, slow_token = new_user(edge_stack.url)
    _, token = new_user(edge_stack.url)
    port = edge_stack.port_base
    slow_header = b"GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nX-Slow: "
    slow_body = (
        b"POST /api/v1/items/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + slow_token.encode() + b"\r\nContent-Length: 1000\r\n\r\n{"
    )
    results: list[tuple[float, bytes]] = []
    clients = [
        threading.Thread(target=_slow_client, args=(port, request, results))
        for request in [slow_header] * 20 + [slow_body] * 20
    ]
    for client in clients:
        client.start()
    time.sleep(1)
    latencies = []
    with httpx.Client(base_url=edge_stack.url, timeout=5) as http:
        for _ in range(20):
            start = time.monotonic()
            response = http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
            latencies.append(time.monotonic() - start)
            assert response.status_code == 200
    for client in clients:
        client.join(timeout=30)
    assert len(results) == len(clients)
    refused = [t for t, data in results if data.startswith(b"HTTP/1.1 503")]
    cut_after = [t for t, data in results if not data.startswith(b"HTTP/1.1 503")]
    per_client = int(edge_stack.env["NGINX_MAX_CONNS_PER_CLIENT"])
    # The slow bodies beyond the address's share were answered 503 on arrival
    # (nginx then reads and drops what the client still sends). The first few
    # arrived before the stack counted as saturated, so were not counted.
    assert len(refused) >= 20 - 2 * per_client, (len(refused), per_client)
    assert all(t < 1.0 for t in refused), refused
    assert all(
        b'"reason":"client_connection_limit"' in data
        for _, data in results
        if data.startswith(b"HTTP/1.1 503")
    )
    # NGINX_CLIENT_TIMEOUT=5s: the rest cut off after it, well before the 30 s socket timeout.
    assert all(4 <= t < 10 for t in cut_after), cut_after
    assert max(latencies) < 1.0, latencies
    timed_out = _logged_408s(edge_stack, expected=len(cut_after))
    assert len(timed_out) >= len(cut_after)
    assert all('"upstream_addr":""' in line for line in timed_out)
    record(
        "slow clients (20 slow-header + 20 slow-body)",
        cut_off_after_s=f"{min(cut_after):.1f}-{max(cut_after):.1f}",
        refused_at_once=len(refused),
        normal_request_max_s=max(latencies),
    )


def test_a_trickled_body_holds_no_place_in_the_apps_cap(edge_stack: RunningStack) -> None:
    """Bodies trickled a byte a second, past the body timeout: honest clients keep being served.

    client_body_timeout restarts with every byte, so a trickle can last as long
    as its sender likes. It holds no place in the app's cap (nginx connects to
    the app only with the whole body in hand) and, beyond its address's
    limits, not even a request at nginx.
    """
    _, slow_token = new_user(edge_stack.url)
    _, token = new_user(edge_stack.url)
    cap = int(edge_stack.env["NGINX_MAX_CONNS"])
    trickle = (
        b"POST /api/v1/items/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + slow_token.encode() + b"\r\nContent-Length: 60000\r\n\r\n{"
    )
    results: list[tuple[float, bytes]] = []
    clients = [
        threading.Thread(
            target=_slow_client,
            args=(edge_stack.port_base, trickle, results),
            kwargs={"trickle_s": 8.0},
        )
        for _ in range(cap + 4)
    ]
    for client in clients:
        client.start()
    time.sleep(1)
    latencies = []
    with httpx.Client(base_url=edge_stack.url, timeout=5) as http:
        for _ in range(30):  # over 6 s, while the trickles go on past the 5 s timeout
            start = time.monotonic()
            response = http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
            latencies.append(time.monotonic() - start)
            assert response.status_code == 200, response.text
            time.sleep(0.2)
    for client in clients:
        client.join(timeout=40)
    refused = [data for _, data in results if data.startswith(b"HTTP/1.1 503")]
    print(f"\n{len(clients)} trickles: {len(refused)} refused at once")
    assert refused and all(b"client_connection_limit" in data for data in refused)
    assert max(latencies) < 1.0, latencies
    record(
        "trickled bodies past the body timeout",
        trickles=len(clients),
        refused_at_once=len(refused),
        normal_request_max_s=max(latencies),
    )


def _logged_408s(stack: RunningStack, expected: int, wait_s: float = 10.0) -> list[str]:
    """The access log's 408 lines; nginx writes its buffered log at least every second."""
    deadline = time.monotonic() + wait_s
    while True:
        access = (stack.state / "logs" / "access.log").read_text()
        lines = [line for line in access.splitlines() if '"status":408' in line]
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.5)


def test_malformed_json_and_wrong_types_are_422(edge_stack: RunningStack) -> None:
    _, token = new_user(edge_stack.url)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        for body in ('{"title": ', "not json", '{"title": 5}', '{"title": []}', "[]", '""'):
            assert_clean_error(http.post(ITEMS, content=body, headers=headers), 422)
        assert_clean_error(http.get(f"{ITEMS}not-a-uuid", headers=headers), 422)
        assert_clean_error(http.get(f"{ITEMS}?limit=abc", headers=headers), 422)
        item = http.post(ITEMS, json={"title": "t"}, headers=headers).json()
        nul = {"title": "a\u0000b"}  # PostgreSQL text cannot hold NUL (was a 500 on PUT)
        for update in ({"title": None}, {"title": ""}, {"owner_id": str(uuid.uuid4())}, nul):
            assert_clean_error(http.put(f"{ITEMS}{item['id']}", json=update, headers=headers), 422)
        for payload in (nul, {"title": "t", "description": "\u0000"}):
            assert_clean_error(http.post(ITEMS, json=payload, headers=headers), 422)
        # Nothing changed.
        assert http.get(f"{ITEMS}{item['id']}", headers=headers).json()["title"] == "t"


def test_bad_tokens_are_401_each_for_its_own_reason(edge_stack: RunningStack) -> None:
    user, token = new_user(edge_stack.url)
    # The stack's real signing key, so each token below is wrong in one way only.
    key = (edge_stack.state / "secret_key").read_text().strip()
    claims = {"sub": user["id"], "exp": datetime.now(UTC) + timedelta(hours=1)}
    assert jwt.decode(token, key, algorithms=["HS256"])["sub"] == user["id"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT may warn about key lengths
        tokens = _bad_tokens(key, claims, user["id"], token)
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        assert http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}).is_success
        for name, (bad, reason) in tokens.items():
            response = http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {bad}"})
            assert_clean_error(response, 401)
            assert response.json()["reason"] == reason, (name, response.text)
        assert_clean_error(http.get("/api/v1/users/me"), 401)


def _bad_tokens(
    key: str, claims: dict[str, Any], user_id: str, token: str
) -> dict[str, tuple[str, str]]:
    """Tokens wrong in exactly one way each, and the reason the app must give."""
    now = datetime.now(UTC)
    header, payload, signature = token.split(".")
    return {
        "forged": (jwt.encode(claims, "not-the-secret-key-not-the-secret-1"), "invalid_token"),
        "expired": (
            jwt.encode({**claims, "exp": now - timedelta(minutes=1)}, key),
            "token_expired",
        ),
        "alg_none": (jwt.encode(claims, None, algorithm="none"), "token_algorithm_refused"),
        "other_alg": (jwt.encode(claims, key, algorithm="HS512"), "token_algorithm_refused"),
        "no_exp": (jwt.encode({"sub": user_id}, key), "token_claim_missing"),
        "unknown_user": (jwt.encode({**claims, "sub": str(uuid.uuid4())}, key), "unknown_user"),
        "tampered": (f"{header}.{payload[:-2]}AA.{signature}", "invalid_token"),
        "garbage": ("garbage", "invalid_token"),
    }


def test_sql_looking_strings_are_stored_verbatim(edge_stack: RunningStack) -> None:
    _, token = new_user(edge_stack.url)
    headers = {"Authorization": f"Bearer {token}"}
    strings = [
        "'; DROP TABLE items; --",
        '" OR 1=1 --',
        "1'); DELETE FROM users WHERE ('1'='1",
        "%' OR title LIKE '%",
        "$$; SELECT pg_sleep(10); $$",
        "\\x00 \\' \\\" ` ; /* */",
        "Robert'); DROP TABLE students;-- 🦆",
    ]
    ids = {}
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        for text in strings:
            response = http.post(ITEMS, json={"title": text, "description": text}, headers=headers)
            assert response.status_code == 201, response.text
            assert response.json()["title"] == text
            ids[response.json()["id"]] = text
        for item_id, text in ids.items():
            fetched = http.get(f"{ITEMS}{item_id}", headers=headers).json()
            assert fetched["title"] == fetched["description"] == text
    assert committed_items(edge_stack.database_url, list(ids)) == ids


def test_users_cannot_touch_each_others_items(edge_stack: RunningStack) -> None:
    """Every item route, as another user: indistinguishable from a missing item."""
    owner, owner_token = new_user(edge_stack.url)
    _, other_token = new_user(edge_stack.url)
    own = {"Authorization": f"Bearer {owner_token}"}
    other = {"Authorization": f"Bearer {other_token}"}
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        item = http.post(ITEMS, json={"title": "private"}, headers=own).json()
        url = f"{ITEMS}{item['id']}"
        missing = f"{ITEMS}{uuid.uuid4()}"
        for method, path, body in (
            ("GET", url, None),
            ("PUT", url, {"title": "stolen"}),
            ("DELETE", url, None),
        ):
            response = http.request(method, path, json=body, headers=other)
            assert_clean_error(response, 404)
            twin = http.request(method, missing, json=body, headers=other)
            assert response.json() == twin.json()
        listing = http.get(ITEMS, headers=other).json()
        assert listing == {"data": [], "count": 0}
        # Claiming ownership in a body is refused, and keys are per user.
        assert_clean_error(
            http.post(ITEMS, json={"title": "x", "owner_id": owner["id"]}, headers=other), 422
        )
        key = {"Idempotency-Key": f"shared-{uuid.uuid4()}"}
        first = http.post(ITEMS, json={"title": "a"}, headers={**own, **key}).json()
        second = http.post(ITEMS, json={"title": "b"}, headers={**other, **key}).json()
        assert first["id"] != second["id"] and second["title"] == "b"
        for method in ("PUT", "DELETE", "GET"):
            assert http.request(method, url, headers=other).status_code in (404, 422)
        assert http.get(url, headers=own).json()["title"] == "private"
    with psycopg2.connect(edge_stack.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT title, owner_id::text FROM items WHERE id = %s", (item["id"],))
        assert cur.fetchone() == ("private", owner["id"])
    conn.close()


def test_signup_cannot_create_a_superuser(edge_stack: RunningStack) -> None:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    for extra in ({"is_superuser": True}, {"is_active": True, "is_superuser": "true"}):
        response = signup(edge_stack.url, {"email": email, "password": "pw-123456", **extra})
        assert_clean_error(response, 422)
    response = signup(edge_stack.url, {"email": email, "password": "pw-123456"})
    assert response.status_code == 201 and response.json()["is_superuser"] is False
    with psycopg2.connect(edge_stack.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), bool_or(is_superuser) FROM users WHERE email = %s", (email,))
        assert cur.fetchone() == (1, False)
    conn.close()


def login_storm(base_url: str, email: str, attempts: int = 40) -> list[httpx.Response]:
    """Failed logins from one address, 8 at a time (argon2 makes each one slow)."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(n: int) -> httpx.Response:
        return httpx.post(
            f"{base_url}/api/v1/login/access-token",
            data={"username": email, "password": f"wrong-{n}"},
            timeout=10,
        )

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(attempt, range(attempts)))


def test_brute_force_logins_are_rate_limited(edge_stack: RunningStack) -> None:
    user, _ = new_user(edge_stack.url)
    time.sleep(2.5)  # an empty login bucket (NGINX_LOGIN_BURST=10, 5r/s)
    started = time.monotonic()
    responses = login_storm(edge_stack.url, user["email"])
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    # 503: admission refusing argon2-bound logins beyond its limit, also a "not now".
    assert set(statuses) <= {400, 429, 503}, statuses
    for response in responses:
        if response.status_code in (429, 503):
            assert_clean_error(response, (429, 503))
            assert response.headers["Retry-After"]
    # Password checks allowed: the burst (10) plus 5 per second, nothing more.
    checked = statuses.count(400)
    assert checked <= 10 + 5 * elapsed + 1, (checked, elapsed)
    # Cheap attempts (no password check) show the limit itself: 429 beyond the burst.
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        quick = [http.post("/api/v1/login/access-token").status_code for _ in range(30)]
    assert quick.count(429) >= 10, quick
    record(
        "brute-force logins",
        attempts=40,
        seconds=elapsed,
        password_checked=checked,
        refused_429=statuses.count(429) + quick.count(429),
        shed_503=statuses.count(503),
    )
