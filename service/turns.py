"""Turns at an expensive step: at most N at once per worker, a short wait, then "not now".

Password hashing and mail delivery run inside a request slot. Left alone, a
flood of signups (argon2) or a slow mail server would let them take every
slot of a worker and starve the cheap requests. Each gets its own small bound,
below the worker's slots (the settings check refuses more), and a request that
cannot get a turn within `wait_s` is refused with the given error, a 503 with
Retry-After, having changed nothing.

Sync endpoints run in worker threads, so this is a threading semaphore.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from service.errors import SluiceError


class Turns:
    def __init__(self, *, concurrency: int, wait_s: float, busy: Callable[[], SluiceError]) -> None:
        self.concurrency = concurrency
        self.wait_s = wait_s
        self._busy = busy
        self._semaphore = threading.BoundedSemaphore(concurrency)

    @contextmanager
    def turn(self) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=self.wait_s):
            raise self._busy()
        try:
            yield
        finally:
            self._semaphore.release()
