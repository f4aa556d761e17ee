"""Session-wide fixtures: the local stack, started by the launcher itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api import Api
from tests.stackctl import RunningStack, start_stack, stop_stack

# Port bases for the test stacks, away from `make up`'s default (24100).
MAIN_STACK_BASE = 24300


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    """The whole request path (nginx, Gunicorn, PgBouncer, PostgreSQL) with default sizing.

    Started once per test session with `python -m deploy.stack up` on its own
    port base and state directory; stopped with `down` at the end.
    """
    running = start_stack("main", MAIN_STACK_BASE)
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.fixture
def api(stack: RunningStack) -> Iterator[Api]:
    client = Api(stack.url)
    yield client
    client.close()
