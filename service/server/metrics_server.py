"""The metrics endpoint run by the Gunicorn master: all workers, plus the backlog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

_LISTEN_STATE = "0A"


def listen_queue(port: int, proc_net: Path = Path("/proc/net")) -> tuple[int, int] | None:
    """(queued, limit) of the LISTEN socket on `port`, from the kernel.

    For a listening TCP socket /proc/net/tcp reports the accept queue length
    as rx_queue; tx_queue is the send queue, always 0 for a LISTEN socket (the
    limit is only in inet_diag, `ss -lnt`), so callers take the limit from
    `effective_backlog` when it reads 0.
    """
    found: tuple[int, int] | None = None
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state != _LISTEN_STATE or int(local.rsplit(":", 1)[1], 16) != port:
                continue
            tx, rx = (int(part, 16) for part in queues.split(":"))
            queued, limit = found or (0, 0)
            found = (queued + rx, limit + tx)
    return found


def effective_backlog(backlog: int, proc_sys: Path = Path("/proc/sys")) -> int:
    """The accept queue limit the kernel applies: listen(backlog) capped by somaxconn."""
    try:
        somaxconn = int((proc_sys / "net" / "core" / "somaxconn").read_text())
    except (OSError, ValueError):
        return backlog
    return min(backlog, somaxconn)


class ListenBacklogCollector(Collector):
    def __init__(self, port: int, backlog: int | None = None) -> None:
        self.port = port
        self.backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queue = listen_queue(self.port)
        if queue is not None and queue[1] == 0 and self.backlog is not None:
            queue = (queue[0], effective_backlog(self.backlog))
        depth = GaugeMetricFamily(
            "sluice_listen_backlog", "Connections waiting in Gunicorn's kernel accept queue."
        )
        limit = GaugeMetricFamily(
            "sluice_listen_backlog_limit", "Effective accept queue limit (backlog, somaxconn)."
        )
        if queue is not None:
            depth.add_metric([], queue[0])
            limit.add_metric([], queue[1])
        yield depth
        yield limit


def build_registry(listen_port: int, backlog: int | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(ListenBacklogCollector(listen_port, backlog))
    return registry


def start_metrics_server(
    *, host: str, port: int, listen_port: int, backlog: int | None = None
) -> None:
    start_http_server(port, addr=host, registry=build_registry(listen_port, backlog))
