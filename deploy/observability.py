"""Exporters and Prometheus for the local stack (filled in by the observability work)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def executors(supervisor: Any) -> Iterator[tuple[str, Any]]:
    return iter(())
