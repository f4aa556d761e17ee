"""Session-wide fixtures: the local stack, started in-process by `deploy.stack.Stack`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api import Api
from tests.stackctl import RunningStack, local_stack

# Port bases for the test stacks, away from `make up`'s default (24100).
MAIN_STACK_BASE = 24300


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    """The whole request path (nginx, Gunicorn, PgBouncer, PostgreSQL) with default sizing.

    Started once per test session on its own port base and state directory;
    every process is stopped, in reverse order, when the session ends.
    """
    with local_stack("main", MAIN_STACK_BASE) as running:
        yield running


@pytest.fixture
def api(stack: RunningStack) -> Iterator[Api]:
    client = Api(stack.url)
    yield client
    client.close()
