"""The mtail program that counts nginx's own refusals from its access log."""

from __future__ import annotations

import json
from pathlib import Path

from tests.observability.conftest import PROMETHEUS_DIR, run, tool


def _line(
    uri: str, status: int, upstream: str, limit_req: str, limit_conn: str, refused: str = ""
) -> str:
    # The fields of log_format sluice_json (nginx/templates/nginx.conf.template), in order.
    return json.dumps(
        {
            "time": "2024-01-01T00:00:00+00:00",
            "request_id": "x",
            "remote_addr": "127.0.0.1",
            "method": "GET",
            "uri": uri,
            "status": status,
            "bytes_sent": 10,
            "request_time": 0.001,
            "upstream_addr": upstream and "127.0.0.1:1",
            "upstream_status": upstream,
            "upstream_connect_time": "",
            "upstream_header_time": "",
            "upstream_response_time": "",
            "limit_req": limit_req,
            "limit_conn": limit_conn,
            "refused": refused,
        },
        separators=(",", ":"),
    )


def test_counts_nginx_refusals_by_reason(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    lines = [
        _line("/api/v1/items/", 200, "200", "PASSED", "PASSED"),
        _line("/api/v1/items/", 429, "", "REJECTED", "", "rate_limited"),
        _line("/api/v1/items/", 429, "", "REJECTED", "", "rate_limited"),
        _line("/api/v1/login/access-token", 429, "", "REJECTED", "", "login_rate_limited"),
        _line("/api/v1/items/", 503, "", "PASSED", "REJECTED", "client_connection_limit"),
        # The app's cap: no upstream server had room (max_conns).
        _line("/api/v1/items/", 503, "502", "PASSED", "PASSED", "connection_limit"),
        # A 503 from the app is the app's refusal, counted by the app.
        _line("/api/v1/items/", 503, "503", "PASSED", "PASSED"),
        _line("/api/v1/items/", 502, "502", "PASSED", "PASSED", "upstream_unavailable"),
    ]
    log.write_text("\n".join(lines) + "\n")
    result = run(
        [
            tool("mtail"),
            "--one_shot",
            "--one_shot_format=prometheus",
            "--emit_prog_label=false",
            f"--progs={PROMETHEUS_DIR / 'mtail'}",
            f"--logs={log}",
        ]
    )
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in result.stdout.splitlines()
        if line.startswith("sluice_")
    }
    assert samples == {
        'sluice_shed_total{layer="nginx",reason="rate_limited"}': 2,
        'sluice_shed_total{layer="nginx",reason="login_rate_limited"}': 1,
        'sluice_shed_total{layer="nginx",reason="client_connection_limit"}': 1,
        'sluice_shed_total{layer="nginx",reason="connection_limit"}': 1,
        'sluice_shed_total{layer="nginx",reason="upstream_unavailable"}': 1,
        'sluice_nginx_responses_total{status="200"}': 1,
        'sluice_nginx_responses_total{status="429"}': 3,
        'sluice_nginx_responses_total{status="502"}': 1,
        'sluice_nginx_responses_total{status="503"}': 3,
    }
