"""sluice_listen_backlog_limit: /proc/net/tcp has no limit for LISTEN sockets."""

from __future__ import annotations

from pathlib import Path

from service.server.metrics_server import ListenBacklogCollector, effective_backlog, listen_queue

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
# Port 8000 (0x1F40) listening with 3 connections waiting to be accepted.
LISTEN = "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000003 00:00000000 00000000\n"


def test_limit_is_listen_backlog_capped_by_somaxconn(tmp_path: Path) -> None:
    (tmp_path / "net" / "core").mkdir(parents=True)
    (tmp_path / "net" / "core" / "somaxconn").write_text("128\n")
    assert effective_backlog(64, proc_sys=tmp_path) == 64
    assert effective_backlog(4096, proc_sys=tmp_path) == 128


def test_queue_depth_from_proc_net(tmp_path: Path) -> None:
    (tmp_path / "tcp").write_text(HEADER + LISTEN)
    assert listen_queue(8000, proc_net=tmp_path) == (3, 0)
    assert listen_queue(8001, proc_net=tmp_path) is None


def test_collector_reports_a_nonzero_limit_for_a_real_socket() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(17)
        port = sock.getsockname()[1]
        families = {f.name: f for f in ListenBacklogCollector(port, backlog=17).collect()}
    assert families["sluice_listen_backlog"].samples[0].value == 0
    assert families["sluice_listen_backlog_limit"].samples[0].value == effective_backlog(17)
