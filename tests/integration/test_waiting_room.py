"""The waiting room through nginx: below capacity nothing is refused; under saturation,
per-client limits keep one heavy client from crowding out the others.

Default sizing on the session stack: 2 workers x L 2 = 4 slots, a waiting room
of 10 in the kernel's accept queue, nginx's cap 14; while more requests are in
progress than there are slots, one address may have at most 4 in progress.
Clients are told apart by address (127.0.0.0/8 is all loopback), as distinct
clients are.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api import Api
from tests.stackctl import RunningStack

READ = "/api/v1/items/?limit=5"


def _client(stack: RunningStack, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=stack.url, transport=transport, timeout=15.0)


@pytest.fixture(scope="module")
def reader(stack: RunningStack) -> Iterator[dict[str, str]]:
    api = Api(stack.url)
    _, headers = api.new_user()
    api.close()
    yield headers


def _slots(stack: RunningStack) -> int:
    return int(stack.env["NGINX_SLOTS"])


def test_a_burst_as_large_as_the_waiting_room_is_served_not_refused(
    stack: RunningStack, reader: dict[str, str]
) -> None:
    """Every slot and every place in the room taken at once, by distinct clients: all served."""
    burst = int(stack.env["NGINX_MAX_CONNS"])
    clients = [_client(stack, f"127.0.1.{n + 1}") for n in range(burst)]
    start = threading.Barrier(burst)

    def one(client: httpx.Client) -> tuple[int, float]:
        start.wait()
        began = time.perf_counter()
        status = client.get(READ, headers=reader).status_code
        return status, time.perf_counter() - began

    try:
        with ThreadPoolExecutor(max_workers=burst) as pool:
            outcomes = list(pool.map(one, clients))
    finally:
        for client in clients:
            client.close()
    statuses = Counter(status for status, _ in outcomes)
    slowest = max(seconds for _, seconds in outcomes)
    print(f"\nburst of {burst} (slots {_slots(stack)}): {dict(statuses)}, slowest {slowest:.3f} s")
    assert statuses == {200: burst}


def test_a_lone_client_with_a_request_per_slot_is_never_refused(
    stack: RunningStack, reader: dict[str, str]
) -> None:
    """workers x L requests in flight from one client, for seconds, on an idle stack."""
    slots = _slots(stack)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    until = time.monotonic() + 3.0

    def loop() -> None:
        with _client(stack, "127.0.2.1") as client:
            while time.monotonic() < until:
                status = client.get(READ, headers=reader).status_code
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=loop) for _ in range(slots)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    print(f"\none client, {slots} in flight for 3 s: {dict(statuses)}")
    assert set(statuses) == {200}, statuses
    assert statuses[200] > 3 * slots


def test_under_saturation_a_heavy_client_is_held_to_its_share(
    stack: RunningStack, api: Api, reader: dict[str, str]
) -> None:
    """A client with three times the cap in flight is refused its excess; light ones are served.

    The heavy client is a user of its own (its token's subject is its rate
    bucket) on an address of its own (its connection bucket).
    """
    _, flooder = api.new_user()
    heavy_threads = 3 * int(stack.env["NGINX_MAX_CONNS"])
    heavy: Counter[int] = Counter()
    light: list[tuple[int, float]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def flood() -> None:
        with _client(stack, "127.0.3.1") as client:
            while not stop.is_set():
                status = client.get(READ, headers=flooder).status_code
                with lock:
                    heavy[status] += 1

    def trickle(address: str) -> None:
        with _client(stack, address) as client:
            while not stop.is_set():
                began = time.perf_counter()
                status = client.get(READ, headers=reader).status_code
                with lock:
                    light.append((status, time.perf_counter() - began))
                time.sleep(0.2)

    threads = [threading.Thread(target=flood) for _ in range(heavy_threads)]
    threads += [threading.Thread(target=trickle, args=(f"127.0.4.{n + 1}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(5.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    served = [seconds for status, seconds in light if status == 200]
    print(
        f"\nheavy ({heavy_threads} in flight): {dict(heavy)}; light: {len(served)}/{len(light)} "
        f"served, slowest {max(served, default=0):.3f} s"
    )
    assert heavy[503] + heavy[429] > 0, "the heavy client must meet its per-client limit"
    assert heavy[200] > 0
    # Wide margins for a loaded 2-core machine; the benchmark measures the real figure.
    assert len(served) >= 0.95 * len(light), light
    assert len(light) >= 20
