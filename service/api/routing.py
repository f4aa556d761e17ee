"""One threadpool hop per request.

FastAPI runs every sync dependency in the threadpool on its own, and then the
sync endpoint, and then validates a sync endpoint's response in the
threadpool again: a request that authenticates and reads made five hops
between the event loop and a thread, a fifth of a worker's CPU. Here:

- dependencies that do no I/O are `async` (no hop);
- a dependency that needs the database returns `InEndpointThread(load)`
  instead of its value: `load` runs later, in the endpoint's thread, once per
  request, before the endpoint body (and on the same Session). Every one a
  request creates runs, in the order created, whether the endpoint takes its
  value or not: a check in `dependencies=[...]` (a superuser's, a user's who
  must exist) is never skipped;
- `OneHopRoute` makes each sync endpoint one coroutine that does exactly one
  hop: it resolves the deferred values the endpoint was given, then runs the
  endpoint, in one thread; the response is then validated on the event loop
  (pydantic, microseconds), as for any async endpoint.

Endpoints keep their usual signatures (`current_user: CurrentUser` is a
`User`), so nothing in a route module knows about this.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

T = TypeVar("T")
U = TypeVar("U")


# What this request's dependencies deferred, in order; a fresh list per
# request (`start_request`, called by the session dependency every deferred
# one depends on).
_PENDING: ContextVar[list[InEndpointThread[Any]] | None] = ContextVar(
    "sluice_in_endpoint_thread", default=None
)


def start_request() -> None:
    """A new request: nothing deferred yet (a kept-alive connection's context may carry
    the previous request's list)."""
    _PENDING.set([])


class InEndpointThread(Generic[T]):
    """A dependency's value that takes blocking work: computed in the endpoint's thread, once."""

    __slots__ = ("_done", "_load", "_value")

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._done = False
        self._value: T | None = None
        pending = _PENDING.get()
        if pending is not None:
            pending.append(self)

    def get(self) -> T:
        """The value; the first call (in the endpoint's thread) computes it."""
        if not self._done:
            self._value = self._load()
            self._done = True
        return self._value  # type: ignore[return-value]

    def then(self, step: Callable[[T], U]) -> InEndpointThread[U]:
        """A value computed from this one, also in the endpoint's thread (a sub-dependency)."""
        return InEndpointThread(lambda: step(self.get()))


def _resolved(value: Any) -> Any:
    return value.get() if isinstance(value, InEndpointThread) else value


def in_one_hop(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A sync endpoint as a coroutine that runs it, and what it depends on, in one thread."""

    def run(pending: list[InEndpointThread[Any]], values: dict[str, Any]) -> Any:
        for deferred in pending:
            deferred.get()
        return endpoint(**{name: _resolved(value) for name, value in values.items()})

    @functools.wraps(endpoint)  # FastAPI reads the signature through __wrapped__
    async def hop(**values: Any) -> Any:
        return await run_in_threadpool(run, list(_PENDING.get() or ()), values)

    return hop


class OneHopRoute(APIRoute):
    """An APIRoute whose sync endpoint runs, with its deferred dependencies, in one hop."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = in_one_hop(endpoint)
        super().__init__(path, endpoint, **kwargs)
