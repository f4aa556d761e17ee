"""The workload: one logged-in user; 80% page reads, 20% creates with unique titles."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from bench.loadgen import Request

ITEMS_PATH = "/api/v1/items/"
BENCH_EMAIL = "bench@example.com"
BENCH_PASSWORD = "bench-password-not-secret"
SEEDED_ITEMS = 10_000
PAGE_SIZE = 20
POST_FRACTION = 0.2
TITLE_PREFIX = "bench-"  # every row the benchmark creates; seeded rows are "seed-"


def build_requests(
    count: int,
    *,
    run_id: str,
    seed: int,
    post_fraction: float = POST_FRACTION,
    seeded_items: int = SEEDED_ITEMS,
    page_size: int = PAGE_SIZE,
) -> list[Request]:
    """`count` requests in schedule order, reproducible by `seed`.

    Reads ask for a random page of the seeded items; each create has a title
    unique to this run and index, so the integrity check can find it.
    """
    rng = random.Random(seed)
    max_skip = max(0, seeded_items - page_size)
    requests = []
    for i in range(count):
        if rng.random() < post_fraction:
            title = f"{TITLE_PREFIX}{run_id}-{i}"
            body = json.dumps({"title": title, "description": "sluice bench"}).encode()
            requests.append(
                Request(
                    method="POST",
                    path=ITEMS_PATH,
                    kind="post",
                    body=body,
                    headers={"Content-Type": "application/json"},
                    tag=title,
                )
            )
        else:
            skip = rng.randint(0, max_skip)
            requests.append(
                Request(
                    method="GET", path=f"{ITEMS_PATH}?skip={skip}&limit={page_size}", kind="get"
                )
            )
    return requests


def titles(requests: Sequence[Request]) -> list[str]:
    return [r.tag for r in requests if r.kind == "post"]


class WorkloadError(RuntimeError):
    pass


def _call(url: str, data: bytes, content_type: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"{}")
        except ValueError:
            return exc.code, {"detail": body.decode(errors="replace")}


def ensure_user(base_url: str, *, email: str = BENCH_EMAIL, password: str = BENCH_PASSWORD) -> None:
    """Sign the bench user up; an existing account is fine."""
    status, body = _call(
        f"{base_url}/api/v1/users/signup",
        json.dumps({"email": email, "password": password}).encode(),
        "application/json",
    )
    if status not in (200, 201, 400, 409):
        raise WorkloadError(f"signup failed: {status} {body}")


def login(base_url: str, *, email: str = BENCH_EMAIL, password: str = BENCH_PASSWORD) -> str:
    """Log in once; the bearer token is used for every request of the runs."""
    status, body = _call(
        f"{base_url}/api/v1/login/access-token",
        urllib.parse.urlencode({"username": email, "password": password}).encode(),
        "application/x-www-form-urlencoded",
    )
    token = body.get("access_token")
    if status != 200 or not isinstance(token, str):
        raise WorkloadError(f"login failed: {status} {body}")
    return token
