"""The workload: N logged-in clients; 80% page reads, 20% creates with unique titles.

Each client is an account of its own with one bearer token, and sends from a
loopback address of its own (`client_address`), as real users do: nginx's
per-client limits (the rate keyed on the token, connections on the address)
meet each client's share of the load rather than all of it.
"""

from __future__ import annotations

import http.client
import json
import random
import time
import urllib.parse
from collections.abc import Sequence

from bench.loadgen import Request
from bench.stats import REJECTION_STATUSES

ITEMS_PATH = "/api/v1/items/"
# The idle probe's read (bench.procedure.wait_until_idle): no run sends it.
PROBE_PATH = f"{ITEMS_PATH}?skip=0&limit=1"
BENCH_PASSWORD = "bench-password-not-secret"
SEEDED_ITEMS = 10_000  # per client
PAGE_SIZE = 20
POST_FRACTION = 0.2
TITLE_PREFIX = "bench-"  # every row the benchmark creates; seeded rows are "seed-"
# How long signup and login keep retrying refusals that carry a Retry-After
# (nginx allows 5 logins a second per address, a burst of 10).
PATIENCE_S = 120.0
# Client i sends from 127.0.0.(FIRST_HOST + i); 127.0.0.1 stays the benchmark's own.
FIRST_HOST = 10
MAX_CLIENTS = 254 - FIRST_HOST


def client_emails(count: int) -> list[str]:
    """The accounts of `count` clients: bench-0@example.com, bench-1@example.com, ..."""
    if count < 1:
        raise ValueError(f"at least one client, not {count}")
    return [f"bench-{i}@example.com" for i in range(count)]


def client_address(index: int) -> str:
    """The loopback address client `index` sends from (Linux routes 127.0.0.0/8 to lo)."""
    if not 0 <= index < MAX_CLIENTS:
        raise ValueError(f"client {index} outside 0..{MAX_CLIENTS - 1}")
    return f"127.0.0.{FIRST_HOST + index}"


def client_addresses(count: int) -> list[str]:
    return [client_address(i) for i in range(count)]


def build_requests(
    count: int,
    *,
    run_id: str,
    seed: int,
    tokens: Sequence[str],
    clients: Sequence[int] | None = None,
    post_fraction: float = POST_FRACTION,
    seeded_items: int = SEEDED_ITEMS,
    page_size: int = PAGE_SIZE,
) -> list[Request]:
    """`count` requests in schedule order, reproducible by `seed`.

    Reads ask for a random page of the sending client's seeded items; each
    create has a title unique to this run and index, so the integrity check can
    find it. Each request goes to one of the clients (`tokens`), drawn at
    random from a generator of its own, so the mix of reads and writes is the
    same whatever the number of clients. `clients[k]` is the index of the
    client whose token is `tokens[k]` (default: k), which picks its source
    address and connection pool in the generator.
    """
    if not tokens:
        raise ValueError("no client tokens")
    ids = list(range(len(tokens))) if clients is None else list(clients)
    if len(ids) != len(tokens):
        raise ValueError(f"{len(ids)} client ids for {len(tokens)} tokens")
    rng = random.Random(seed)
    assign = random.Random(f"clients-{seed}")
    auth = [{"Authorization": f"Bearer {token}"} for token in tokens]
    max_skip = max(0, seeded_items - page_size)
    requests = []
    for i in range(count):
        who = assign.randrange(len(auth))
        client = auth[who]
        if rng.random() < post_fraction:
            title = f"{TITLE_PREFIX}{run_id}-{i}"
            body = json.dumps({"title": title, "description": "sluice bench"}).encode()
            requests.append(
                Request(
                    method="POST",
                    path=ITEMS_PATH,
                    kind="post",
                    body=body,
                    headers={"Content-Type": "application/json", **client},
                    tag=title,
                    client=ids[who],
                )
            )
        else:
            skip = rng.randint(0, max_skip)
            requests.append(
                Request(
                    method="GET",
                    path=f"{ITEMS_PATH}?skip={skip}&limit={page_size}",
                    kind="get",
                    headers=client,
                    client=ids[who],
                )
            )
    return requests


def merge(
    *streams: tuple[Sequence[float], Sequence[Request]],
) -> tuple[list[float], list[Request]]:
    """Several (offsets, requests) schedules as one, in time order (ties keep stream order)."""
    timed = sorted(
        (
            (offset, n, i)
            for n, (offsets, _) in enumerate(streams)
            for i, offset in enumerate(offsets)
        ),
    )
    return [t for t, _, _ in timed], [streams[n][1][i] for _, n, i in timed]


def titles(requests: Sequence[Request]) -> list[str]:
    return [r.tag for r in requests if r.kind == "post"]


class WorkloadError(RuntimeError):
    pass


def _post(
    url: str, data: bytes, content_type: str, *, source: str
) -> tuple[int, dict[str, object], float | None]:
    """One POST from address `source`: status, JSON body, and the Retry-After delay if any."""
    split = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(
        split.hostname or "127.0.0.1", split.port or 80, timeout=30, source_address=(source, 0)
    )
    try:
        conn.request("POST", split.path, body=data, headers={"Content-Type": content_type})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = {"detail": raw.decode(errors="replace")}
    if not isinstance(body, dict):
        body = {"detail": body}
    try:
        retry_after = float(response.headers.get("Retry-After", ""))
    except ValueError:
        retry_after = None
    return response.status, body, None if response.status < 400 else retry_after


def _call(
    url: str, data: bytes, content_type: str, *, source: str
) -> tuple[int, dict[str, object]]:
    """POST, retrying a 429 or 503 after its Retry-After delay, for up to PATIENCE_S."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        status, body, retry_after = _post(url, data, content_type, source=source)
        if (
            status not in REJECTION_STATUSES
            or retry_after is None
            or time.monotonic() + retry_after > deadline
        ):
            return status, body
        time.sleep(max(0.1, retry_after))


def sign_up(base_url: str, emails: Sequence[str], *, password: str = BENCH_PASSWORD) -> None:
    """Create the clients' accounts, each from its client's address; existing ones are fine."""
    for index, email in enumerate(emails):
        status, body = _call(
            f"{base_url}/api/v1/users/signup",
            json.dumps({"email": email, "password": password}).encode(),
            "application/json",
            source=client_address(index),
        )
        if status not in (200, 201, 400, 409):
            raise WorkloadError(f"signup of {email} failed: {status} {body}")


def log_in(base_url: str, emails: Sequence[str], *, password: str = BENCH_PASSWORD) -> list[str]:
    """Log each client in once, from its address: one bearer token per client, for every run."""
    tokens = []
    for index, email in enumerate(emails):
        status, body = _call(
            f"{base_url}/api/v1/login/access-token",
            urllib.parse.urlencode({"username": email, "password": password}).encode(),
            "application/x-www-form-urlencoded",
            source=client_address(index),
        )
        token = body.get("access_token")
        if status != 200 or not isinstance(token, str):
            raise WorkloadError(f"login of {email} failed: {status} {body}")
        tokens.append(token)
    return tokens
