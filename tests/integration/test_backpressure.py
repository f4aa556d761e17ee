"""Back-pressure through the whole stack, with limits small enough to overflow.

Two workers admit one request each (L=1, pool 1), queue two more (Q=2) for at
most 200 ms, PgBouncer has one server connection, and nginx caps concurrent
requests. Holding a PostgreSQL lock from a separate connection makes admitted
requests stall, which is how a burst overflows every layer on demand.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import psycopg2
import pytest

from service.server.gate import FIRST_REQUEST_TIMEOUT_S
from tests.api import Api
from tests.stackctl import RunningStack, local_stack

SMALL_STACK_BASE = 24400
SMALL_LIMITS = {
    "SLUICE_WORKERS": "2",
    "SLUICE_DB_CONNECTION_BUDGET": "1",
    "SLUICE_QUEUE_LENGTH": "2",
    "SLUICE_TARGET_LATENCY_MS": "400",
    "SLUICE_REQUEST_DEADLINE_MS": "3000",
    "PGBOUNCER_QUERY_WAIT_TIMEOUT": "1",
    "NGINX_RATE_PER_CLIENT": "1000",
    "NGINX_BURST_PER_CLIENT": "1000",
    # Not the default, so every layer's Retry-After is seen to come from it.
    "SLUICE_RETRY_AFTER_S": "3",
}
CLIENT_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def small_stack() -> Iterator[RunningStack]:
    """A stack with SMALL_LIMITS for this module, started before its first test, stopped after."""
    with local_stack("small", SMALL_STACK_BASE, **SMALL_LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def auth(small_stack: RunningStack) -> dict[str, str]:
    api = Api(small_stack.url)
    _, headers = api.new_user()
    api.close()
    return headers


@contextlib.contextmanager
def items_locked(dsn: str) -> Iterator[None]:
    """Block every statement on `items` until the block ends."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        conn.rollback()
        conn.close()


@dataclass
class Outcome:
    status: int
    seconds: float
    headers: httpx.Headers
    body: dict[str, object]
    title: str | None = None


def _send(client: httpx.Client, method: str, path: str, **kwargs: object) -> Outcome:
    start = time.perf_counter()
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    try:
        body = response.json()
    except ValueError:
        body = {"raw": response.text}
    return Outcome(response.status_code, elapsed, response.headers, body)


# (method, path, httpx request arguments)
Call = tuple[str, str, Mapping[str, object]]


def _burst(stack: RunningStack, calls: Sequence[Call]) -> list[Outcome]:
    with contextlib.ExitStack() as clients:
        return _burst_with(_clients(stack, len(calls), clients), calls)


def _clients(stack: RunningStack, count: int, stack_of: contextlib.ExitStack) -> list[httpx.Client]:
    """A client (and so a connection) per call: an httpx client is not shared across threads."""
    return [
        stack_of.enter_context(httpx.Client(base_url=stack.url, timeout=CLIENT_TIMEOUT_S))
        for _ in range(count)
    ]


def _burst_with(clients: list[httpx.Client], calls: Sequence[Call]) -> list[Outcome]:
    """Every call at once, each on its own client."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        start = threading.Barrier(len(calls))

        def one(client: httpx.Client, call: Call) -> Outcome:
            start.wait()
            return _send(client, call[0], call[1], **call[2])

        return list(pool.map(one, clients, calls))


def _burst_during_lock(stack: RunningStack, calls: Sequence[Call], hold_s: float) -> list[Outcome]:
    """Fire the burst while `items` is locked; release the lock after `hold_s`."""
    result: list[Outcome] = []
    with contextlib.ExitStack() as resources:
        # Made before the lock: building 40 clients takes a while.
        clients = _clients(stack, len(calls), resources)
        with items_locked(stack.database_url):
            worker = threading.Thread(target=lambda: result.extend(_burst_with(clients, calls)))
            worker.start()
            time.sleep(hold_s)
        worker.join(timeout=CLIENT_TIMEOUT_S * 2)
    assert not worker.is_alive(), "a client hung"
    return result


def _assert_honest_rejection(outcome: Outcome) -> None:
    assert outcome.status in (429, 503), outcome
    assert outcome.headers.get("retry-after") == SMALL_LIMITS["SLUICE_RETRY_AFTER_S"], outcome
    assert isinstance(outcome.body.get("reason"), str), outcome
    assert outcome.body.get("detail"), outcome


def _p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def test_burst_beyond_capacity_is_shed_fast_and_honestly(
    small_stack: RunningStack, auth: dict[str, str]
) -> None:
    calls = [("GET", "/api/v1/items/?limit=5", {"headers": auth})] * 40
    outcomes = _burst_during_lock(small_stack, calls, hold_s=1.0)
    admitted = [o for o in outcomes if o.status == 200]
    rejected = [o for o in outcomes if o.status != 200]
    print(
        f"\nburst of 40: admitted {len(admitted)} (p50 {_p50([o.seconds for o in admitted]):.3f}s)"
        f", rejected {len(rejected)} (p50 {_p50([o.seconds for o in rejected]):.3f}s, max "
        f"{max(o.seconds for o in rejected):.3f}s), reasons "
        f"{sorted({str(o.body.get('reason')) for o in rejected})}"
    )
    assert all(o.status in (200, 429, 503) for o in outcomes), [o.status for o in outcomes]
    assert admitted, "some requests must be served once the lock is released"
    assert len(rejected) >= 20, "most of a 40-request burst exceeds 2 workers x (1 + 2)"
    for outcome in rejected:
        _assert_honest_rejection(outcome)
    # Refusals come back well before the admitted requests that waited out the lock.
    assert _p50([o.seconds for o in rejected]) < 0.5
    assert max(o.seconds for o in admitted) > 0.9


def test_readyz_stays_ready_while_the_app_sheds(
    small_stack: RunningStack, auth: dict[str, str]
) -> None:
    """Under load that keeps every slot and pooled connection busy, /readyz says ready.

    Readiness failing under load would take a busy pod out of its Service and
    push its traffic onto the others (a cascade); it must mean "can take
    traffic", and shedding is what says "not now".
    """
    stop = threading.Event()
    statuses: list[int] = []
    probes: list[tuple[int, str]] = []

    def load() -> None:
        with httpx.Client(base_url=small_stack.url, timeout=CLIENT_TIMEOUT_S) as client:
            while not stop.is_set():
                statuses.append(
                    _send(client, "GET", "/api/v1/items/?limit=20", headers=auth).status
                )

    threads = [threading.Thread(target=load) for _ in range(12)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=small_stack.url, timeout=CLIENT_TIMEOUT_S) as client:
            time.sleep(1.0)
            for _ in range(40):
                response = client.get("/readyz")
                probes.append((response.status_code, response.text))
                time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=CLIENT_TIMEOUT_S * 2)
    served, shed = statuses.count(200), statuses.count(503)
    print(f"\nreadyz under load: {len(probes)} probes, {served} served, {shed} shed")
    assert served and shed, "the load must both be served and overflow the stack"
    assert [p for p in probes if p[0] != 200] == []


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (it answers Connection: close)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def _ask(
    port: int, path: str, *, timeout_s: float, headers: dict[str, str] | None = None
) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: sluice\r\n{extra}Connection: close\r\n\r\n".encode()
    )
    return sock


def _stall_after_s(stack: RunningStack) -> float:
    return int(stack.env["SLUICE_STANDING_INTERVAL_MS"]) / 1000


def test_a_worker_accepts_only_while_it_has_a_slot_free(
    small_stack: RunningStack, auth: dict[str, str]
) -> None:
    """Connections beyond the slots wait in the shared accept queue; probes never do.

    A silent connection and one that sent half a request header take both
    workers' only slot (L=1). A request on a third connection is not accepted
    by anyone while a slot may still free, and the probe port answers at once.
    When no slot has come back for the stall interval, the workers take the
    waiting request in and refuse it at once (`stalled`), rather than letting
    it wait for the silent connections' FIRST_REQUEST_TIMEOUT_S.
    """
    app_port, probe_port = small_stack.ports["gunicorn"], small_stack.ports["probes"]
    stall_s = _stall_after_s(small_stack)
    silent = [socket.create_connection(("127.0.0.1", app_port), timeout=30) for _ in range(2)]
    silent[1].sendall(b"GET /healthz HTTP/1.1\r\nHost: slu")
    try:
        time.sleep(0.3)  # both accepted, one by each worker
        started = time.monotonic()
        waiting = _ask(app_port, "/api/v1/items/", timeout_s=stall_s / 2, headers=auth)
        with pytest.raises(TimeoutError):
            waiting.recv(1)
        probe = _ask(probe_port, "/readyz", timeout_s=5.0)
        assert probe.recv(64).startswith(b"HTTP/1.1 200"), "the probe port must not wait"
        probe.close()
        waiting.settimeout(FIRST_REQUEST_TIMEOUT_S + 10)
        answer = _read_all(waiting)
        waited = time.monotonic() - started
        waiting.close()
        print(f"\nthe third connection was answered after {waited:.2f} s")
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b'"reason":"stalled"' in answer, answer
        assert waited < FIRST_REQUEST_TIMEOUT_S - 1
        # The silent connections were closed by the app, not by this test.
        for sock in silent:
            sock.settimeout(FIRST_REQUEST_TIMEOUT_S + 10)
            assert sock.recv(1) == b""
        # Their slots came back: the next request is served.
        after = _ask(app_port, "/api/v1/items/", timeout_s=CLIENT_TIMEOUT_S, headers=auth)
        with after:
            assert after.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        for sock in silent:
            sock.close()


def test_a_request_whose_client_left_holds_its_slot_until_its_handler_ends(
    small_stack: RunningStack, auth: dict[str, str]
) -> None:
    """A client that gives up does not free the slot: its handler still runs.

    Two requests stall on a locked table, one in each worker (L=1), and their
    clients reset their connections. The handlers still hold a thread and a
    database connection each, so a third request finds no slot: it waits in
    the accept queue, then is refused as `stalled`. (Had the slots been given
    back, it would have been admitted and waited for the lock.)
    """
    app_port = small_stack.ports["gunicorn"]
    request = (
        f"GET /api/v1/items/ HTTP/1.1\r\nHost: sluice\r\n"
        f"Authorization: {auth['Authorization']}\r\nConnection: close\r\n\r\n"
    ).encode()
    with items_locked(small_stack.database_url):
        for _ in range(2):
            left = socket.create_connection(("127.0.0.1", app_port), timeout=5)
            left.sendall(request)
            time.sleep(0.3)  # accepted, its handler waiting for the lock
            # A reset, as a client that times out and goes away.
            left.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            left.close()
        waiting = _ask(app_port, "/api/v1/items/", timeout_s=CLIENT_TIMEOUT_S, headers=auth)
        with waiting:
            answer = _read_all(waiting)
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert b'"reason":"stalled"' in answer, answer


def test_the_probe_port_serves_only_the_probes(small_stack: RunningStack) -> None:
    """The probe port is ungated and outside nginx's cap: no way around them."""
    probes = f"http://127.0.0.1:{small_stack.ports['probes']}"
    with httpx.Client(base_url=probes, timeout=CLIENT_TIMEOUT_S) as client:
        assert client.get("/healthz").status_code == 200
        refused = client.get("/api/v1/items/")
    assert refused.status_code == 404
    assert refused.json()["reason"] == "not_found"


def test_statement_timeout_answers_503_and_the_stack_recovers(
    small_stack: RunningStack, auth: dict[str, str]
) -> None:
    with httpx.Client(base_url=small_stack.url, timeout=CLIENT_TIMEOUT_S) as client:
        with items_locked(small_stack.database_url):
            stalled = _send(client, "GET", "/api/v1/items/", headers=auth)
        assert stalled.status == 503, stalled
        assert stalled.body["reason"] == "statement_timeout"
        _assert_honest_rejection(stalled)
        # SET LOCAL statement_timeout = what is left of the 3 s deadline.
        assert 2.0 < stalled.seconds < 4.5, stalled.seconds
        recovered = _send(client, "GET", "/api/v1/items/", headers=auth)
        assert recovered.status == 200, recovered


def test_pgbouncer_wait_timeout_answers_503(
    small_stack: RunningStack, auth: dict[str, str]
) -> None:
    # Hold PgBouncer's only server connection in an open transaction.
    holder = psycopg2.connect(small_stack.env["SLUICE_PGBOUNCER_URL"])
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT 1")
            with httpx.Client(base_url=small_stack.url, timeout=CLIENT_TIMEOUT_S) as client:
                waited = _send(client, "GET", "/api/v1/items/", headers=auth)
    finally:
        holder.rollback()
        holder.close()
    assert waited.status == 503, waited
    # PgBouncer reports query_wait_timeout and closes the client connection;
    # psycopg2 surfaces only the closed connection, so the app says db_unavailable.
    assert waited.body["reason"] in ("pgbouncer_wait_timeout", "db_unavailable")
    _assert_honest_rejection(waited)
    # query_wait_timeout is 1 s; pre-ping retries once: well under the 3 s deadline.
    assert waited.seconds < 2.9, waited.seconds
    assert "pooler error: query_wait_timeout" in small_stack.log("pgbouncer", lines=200)
    with httpx.Client(base_url=small_stack.url, timeout=CLIENT_TIMEOUT_S) as client:
        assert _send(client, "GET", "/api/v1/items/", headers=auth).status == 200


def test_acknowledged_writes_are_committed_and_rejected_ones_are_not(
    small_stack: RunningStack, auth: dict[str, str]
) -> None:
    run = uuid.uuid4().hex[:8]
    titles = [f"burst-{run}-{n}" for n in range(40)]
    calls = [("POST", "/api/v1/items/", {"headers": auth, "json": {"title": t}}) for t in titles]
    outcomes = _burst_during_lock(small_stack, calls, hold_s=1.0)
    for outcome, title in zip(outcomes, titles, strict=True):
        outcome.title = title
    acknowledged = {o.title for o in outcomes if o.status == 201}
    rejected = {o.title for o in outcomes if o.status != 201}
    assert all(o.status in (201, 429, 503) for o in outcomes), [o.status for o in outcomes]
    assert acknowledged and rejected
    with psycopg2.connect(small_stack.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT title FROM items WHERE title LIKE %s", (f"burst-{run}-%",))
        stored = {row[0] for row in cur.fetchall()}
    print(f"\nwrites: {len(acknowledged)} acknowledged, {len(rejected)} rejected")
    assert acknowledged <= stored, f"lost acknowledged writes: {acknowledged - stored}"
    assert not (rejected & stored), f"rejected writes committed: {rejected & stored}"


def test_nginx_refusals_carry_the_same_retry_after(small_stack: RunningStack) -> None:
    # Login attempts are rate-limited per address by nginx (NGINX_LOGIN_RATE,
    # burst NGINX_LOGIN_BURST): a burst of 30 at once goes past it.
    form = {"username": "nobody@example.com", "password": "wrong-password"}
    outcomes = _burst(small_stack, [("POST", "/api/v1/login/access-token", {"data": form})] * 30)
    limited = [o for o in outcomes if o.status == 429]
    assert limited, [o.status for o in outcomes]
    for outcome in limited:
        assert outcome.body.get("layer") == "nginx", outcome
        _assert_honest_rejection(outcome)


def test_idempotency_key_creates_one_row_across_workers(api: Api, stack: RunningStack) -> None:
    _, headers = api.new_user()
    key = uuid.uuid4().hex
    title = f"idem-{key[:8]}"
    calls = [
        (
            "POST",
            "/api/v1/items/",
            {"headers": headers | {"Idempotency-Key": key}, "json": {"title": title}},
        )
    ] * 8
    outcomes = _burst(stack, calls)
    created = [o for o in outcomes if o.status == 201]
    assert created, [o.status for o in outcomes]
    assert all(o.status in (201, 429, 503) for o in outcomes)
    assert len({str(o.body["id"]) for o in created}) == 1
    with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM items WHERE title = %s", (title,))
        assert cur.fetchone() == (1,)
    other = api.http.post(
        "/api/v1/items/", json={"title": "different"}, headers=headers | {"Idempotency-Key": key}
    )
    assert other.status_code == 422 and other.json()["reason"] == "idempotency_key_reused"
