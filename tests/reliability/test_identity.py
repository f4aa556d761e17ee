"""Limits no client can step around (issue 22), through nginx on the edge stack.

nginx counts a client by the subject of a token whose signature it checked
(nginx/njs/sluice.js), else by its address, and connections by address; the
per-client limits apply while the stack is saturated. Every flood here
saturates the edge stack (default sizing: 4 slots), from an address of its
own, so the shared limits of other tests are untouched.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from service.server.worker import MAX_HEADER_BYTES
from service.settings import Settings
from tests.reliability.conftest import REAL_IP_BALANCER, login, new_user, record
from tests.stackctl import RunningStack

FLOOD = 1500
IN_FLIGHT = 64


def _made_up_token(n: int) -> str:
    """Shaped like a JWT, signed with nothing anyone knows."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    header = part({"alg": "HS256", "typ": "JWT"})
    claims = part({"sub": f"00000000-0000-0000-0000-{n:012d}", "exp": int(time.time()) + 3600})
    return f"{header}.{claims}.{part({'n': n})}"


def _flood(stack: RunningStack, address: str, tokens: list[str], path: str) -> Counter[str]:
    """FLOOD requests, IN_FLIGHT at a time, from `address`, cycling through `tokens`.

    The counts are by status and reason ("200", "429 rate_limited", ...), and
    "seconds" is how long the flood took. Each thread has a client of its own
    (an httpx client shared by many threads loses connections).
    """
    started = time.monotonic()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    local = threading.local()
    clients: list[httpx.Client] = []

    def client() -> httpx.Client:
        if not hasattr(local, "http"):
            transport = httpx.HTTPTransport(local_address=address)
            local.http = httpx.Client(base_url=stack.url, transport=transport, timeout=15)
            with lock:
                clients.append(local.http)
        http: httpx.Client = local.http
        return http

    def one(n: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
        response = client().get(path, headers=headers)
        status = response.status_code
        key = "200" if status == 200 else f"{status} {response.json().get('reason', '')}"
        with lock:
            outcomes[key] += 1

    try:
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            list(pool.map(one, range(FLOOD)))
    finally:
        for http in clients:
            http.close()
    outcomes["seconds"] = round(time.monotonic() - started)
    return outcomes


NGINX_REFUSALS = {"429 rate_limited", "503 client_connection_limit", "503 connection_limit"}


def _log_size(stack: RunningStack) -> int:
    return (stack.state / "logs" / "access.log").stat().st_size


def _clients_logged(stack: RunningStack, addresses: set[str], since: int) -> set[str]:
    """The per-client keys nginx logged, after `since` bytes of its log, for these addresses'
    requests (the saturated ones: the key is empty otherwise)."""
    time.sleep(1.5)  # nginx's access log buffer is flushed every second
    keys = set()
    with (stack.state / "logs" / "access.log").open() as log:
        log.seek(since)
        lines = log.read().splitlines()
    for line in lines:
        entry = json.loads(line)
        if entry["remote_addr"] in addresses and entry.get("client"):
            keys.add(entry["client"])
    return keys


def _rate_limited(outcomes: Counter[str]) -> int:
    return outcomes["429 rate_limited"]


def test_made_up_tokens_are_limited_like_one_client(edge_stack: RunningStack) -> None:
    """A new made-up bearer token on every request is no fresh bucket: the address is the client."""
    made_up = [_made_up_token(n) for n in range(FLOOD)]
    since = _log_size(edge_stack)
    outcomes = _flood(edge_stack, "127.0.7.1", made_up, "/api/v1/users/me")
    print(f"\nmade-up tokens from one host: {dict(outcomes)}")
    assert set(outcomes) - {"seconds"} <= {"401 invalid_token", *NGINX_REFUSALS}
    # One bucket: each made-up token alone would never run out of its burst.
    assert _rate_limited(outcomes) > 0, outcomes
    assert _clients_logged(edge_stack, {"127.0.7.1"}, since) == {"a:127.0.7.1"}
    record("made-up tokens, one host", **{k.replace(" ", "_"): v for k, v in outcomes.items()})


def test_logging_in_again_is_no_new_bucket(edge_stack: RunningStack) -> None:
    """One user's tokens from four logins, flooding from four addresses: one bucket.

    nginx keys each of those requests on the user's id, whichever token and
    address it came with, so they all draw on one rate limit.
    """
    user, first = new_user(edge_stack.url)
    tokens = [first]
    for _ in range(3):
        time.sleep(1.1)  # a token of the same second would be the same token
        tokens.append(login(edge_stack.url, user["email"], "correct-horse-9"))
    assert len(set(tokens)) == 4
    results: list[Counter[str]] = []
    since = _log_size(edge_stack)
    started = time.monotonic()
    threads = [
        threading.Thread(
            target=lambda a=f"127.0.8.{n + 1}", t=token: results.append(
                _flood(edge_stack, a, [t], "/api/v1/users/me")
            )
        )
        for n, token in enumerate(tokens)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    seconds = time.monotonic() - started
    total: Counter[str] = sum(results, Counter())
    del total["seconds"]
    served = total["200"]
    print(f"\none user, four logins, four hosts, {seconds:.1f} s: {dict(total)}")
    assert served and _rate_limited(total) > 0, total
    addresses = {f"127.0.8.{n + 1}" for n in range(4)}
    assert _clients_logged(edge_stack, addresses, since) == {f"s:{user['id']}"}


@pytest.fixture
def reader(edge_stack: RunningStack) -> Iterator[dict[str, str]]:
    _, token = new_user(edge_stack.url)
    yield {"Authorization": f"Bearer {token}"}


def test_a_signup_and_login_flood_cannot_starve_the_api(
    edge_stack: RunningStack, reader: dict[str, str]
) -> None:
    """Signups and logins with made-up tokens from one host; a logged-in client keeps reading.

    nginx limits signup and login per address (2 and 5 a second) and the app
    hashes under a bound of its own, so the hashing they ask for cannot take
    the request slots the reader needs.
    """
    stop = threading.Event()
    flood: Counter[int] = Counter()
    lock = threading.Lock()

    def hammer(n: int) -> None:
        transport = httpx.HTTPTransport(local_address="127.0.9.1")
        with httpx.Client(base_url=edge_stack.url, transport=transport, timeout=15) as http:
            i = 0
            while not stop.is_set():
                i += 1
                headers = {"Authorization": f"Bearer {_made_up_token(n * 10_000 + i)}"}
                email = f"flood-{n}-{i}-{time.monotonic_ns()}@example.com"
                if i % 2:
                    response = http.post(
                        "/api/v1/users/signup",
                        json={"email": email, "password": "correct-horse-9"},
                        headers=headers,
                    )
                else:
                    response = http.post(
                        "/api/v1/login/access-token",
                        data={"username": email, "password": "wrong-password-1"},
                        headers=headers,
                    )
                with lock:
                    flood[response.status_code] += 1

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    reads: Counter[int] = Counter()
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        for _ in range(100):
            reads[http.get("/api/v1/items/?limit=5", headers=reader).status_code] += 1
            time.sleep(0.03)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    print(f"\nflood: {dict(flood)}; reads: {dict(reads)}")
    assert flood[429] > 0, flood  # nginx's signup and login limits met the flood
    assert 500 not in flood
    assert reads[200] >= 99, reads
    record("signup and login flood", flood=dict(flood), reads_ok=reads[200])


def test_probes_through_nginx_are_limited_per_address(edge_stack: RunningStack) -> None:
    """/healthz and /readyz reach the workers' probe port: not without a limit.

    Whatever the machine's speed, no more than the burst plus the rate times
    the time taken may pass.
    """
    rate = int(edge_stack.env["NGINX_PROBE_RATE"].removesuffix("r/s"))
    burst = int(edge_stack.env["NGINX_PROBE_BURST"])
    statuses: Counter[int] = Counter()
    reasons: Counter[str] = Counter()
    lock = threading.Lock()
    transport = httpx.HTTPTransport(local_address="127.0.10.1")
    limits = httpx.Limits(max_connections=16)
    with httpx.Client(
        base_url=edge_stack.url, transport=transport, limits=limits, timeout=10
    ) as http:

        def probe(_: int) -> None:
            response = http.get("/healthz")
            with lock:
                statuses[response.status_code] += 1
                if response.status_code == 429:
                    reasons[response.json()["reason"]] += 1

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(probe, range(4 * (rate + burst))))
        elapsed = time.monotonic() - started
    print(f"\n{sum(statuses.values())} probes in {elapsed:.2f} s: {dict(statuses)}")
    assert set(statuses) <= {200, 429}
    assert statuses[200] <= burst + rate * elapsed + rate / 10, (statuses, elapsed)
    assert set(reasons) <= {"probe_rate_limited"}


def test_behind_a_balancer_the_forwarded_address_is_the_client(edge_stack: RunningStack) -> None:
    """NGINX_REAL_IP_FROM names the balancer: its X-Forwarded-For is the client, no one else's.

    Login attempts are limited per client address: one forwarded client
    exhausts its bucket while another, behind the same balancer, keeps its
    own. A peer that is not the balancer cannot choose its address.
    """
    assert edge_stack.env["NGINX_REAL_IP_FROM"] == REAL_IP_BALANCER

    def attempts(forwarded_for: str, *, source: str = "127.0.0.1", count: int = 30) -> Counter[int]:
        transport = httpx.HTTPTransport(local_address=source)
        form = {"username": "nobody@example.com", "password": "wrong-password-1"}
        headers = {"X-Forwarded-For": forwarded_for}
        with httpx.Client(base_url=edge_stack.url, transport=transport, timeout=10) as http:
            return Counter(
                http.post("/api/v1/login/access-token", data=form, headers=headers).status_code
                for _ in range(count)
            )

    first = attempts("198.51.100.7")
    second = attempts("198.51.100.8", count=5)
    spoofed = attempts("198.51.100.9", source="127.0.12.1")
    print(
        f"\nforwarded client A {dict(first)}, B {dict(second)}; "
        f"not through the balancer {dict(spoofed)}"
    )
    assert first[429] > 0, first  # A's own login bucket ran out
    assert second[429] == 0, second  # B's is its own
    log = (edge_stack.state / "logs" / "access.log").read_text()
    assert '"remote_addr":"198.51.100.7"' in log
    assert '"remote_addr":"198.51.100.9"' not in log  # 127.0.12.1 is no balancer


def _direct(stack: RunningStack, request: bytes, *, timeout_s: float) -> tuple[bytes, float]:
    """Send `request` straight to a worker (past nginx); what it answered, and when."""
    started = time.monotonic()
    with socket.create_connection(
        ("127.0.0.1", stack.ports["gunicorn"]), timeout=timeout_s
    ) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data, time.monotonic() - started


def test_a_worker_reached_directly_bounds_headers(edge_stack: RunningStack) -> None:
    """Without nginx in front: request headers beyond MAX_HEADER_BYTES are a 431, in JSON."""
    huge = b"X-Big: " + b"a" * (MAX_HEADER_BYTES + 1024) + b"\r\n"
    answer, _ = _direct(
        edge_stack, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + huge + b"\r\n", timeout_s=10
    )
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"reason": "headers_too_large"' in answer
    ok, _ = _direct(
        edge_stack, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout_s=10
    )
    assert ok.startswith(b"HTTP/1.1 200")


def test_a_worker_reached_directly_bounds_a_trickled_body(edge_stack: RunningStack) -> None:
    """A body that never finishes: 408 after SLUICE_BODY_TIMEOUT_S, and its slot comes back."""
    _, token = new_user(edge_stack.url)
    timeout_s = Settings.from_environ(edge_stack.env).body_timeout_s
    stalled = (
        b"POST /api/v1/items/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"title"'
    )
    answer, waited = _direct(edge_stack, stalled, timeout_s=timeout_s + 20)
    print(f"\nstalled body answered after {waited:.1f} s")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"reason":"client_timeout"' in answer
    assert timeout_s - 0.5 < waited < timeout_s + 5
    with httpx.Client(base_url=edge_stack.url, timeout=5) as http:
        assert (
            http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}).status_code
            == 200
        )
