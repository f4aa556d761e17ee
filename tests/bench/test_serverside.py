"""Who refused, from nginx's access log and the app's counters, as the stack writes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.serverside import (
    APP_503,
    NGINX_CLIENT_CONN,
    NGINX_LIMIT_CONN,
    NGINX_LIMIT_REQ,
    LogLine,
    LogSlice,
    attribute,
    counter_delta,
    group_layers,
    parse_line,
    refuser,
    run_layers,
    shed_counts,
)
from bench.workload import PROBE_PATH

# Lines as nginx writes them with the stack's `sluice_json` format
# (nginx/templates/nginx.conf.template); request ids and times from a real run.
ADMITTED_GET = (
    '{"time":"2026-12-02T07:16:06+00:00","request_id":"15a7405e4005e2757ec84404e89d7a84",'
    '"remote_addr":"127.0.0.1","method":"GET","uri":"/api/v1/items/?skip=4711&limit=20",'
    '"status":200,"bytes_sent":4213,"request_time":0.012,"upstream_addr":"127.0.0.1:36102",'
    '"upstream_status":"200","upstream_connect_time":"0.000","upstream_header_time":"0.012",'
    '"upstream_response_time":"0.012","limit_req":"PASSED","limit_conn":"PASSED"}'
)
ADMITTED_POST = (
    '{"time":"2026-12-02T07:16:06+00:00","request_id":"9c745be9aea8b9b15e87fee5399ebbb2",'
    '"remote_addr":"127.0.0.1","method":"POST","uri":"/api/v1/items/","status":201,'
    '"bytes_sent":240,"request_time":0.030,"upstream_addr":"127.0.0.1:36102",'
    '"upstream_status":"201","upstream_connect_time":"0.000","upstream_header_time":"0.030",'
    '"upstream_response_time":"0.030","limit_req":"PASSED","limit_conn":"PASSED"}'
)
RATE_LIMITED = (
    '{"time":"2026-12-02T07:16:06+00:00","request_id":"2cffa811ba6a2eaeafd42be21de27840",'
    '"remote_addr":"127.0.0.1","method":"GET","uri":"/api/v1/items/?skip=12&limit=20",'
    '"status":429,"bytes_sent":124,"request_time":0.000,"upstream_addr":"",'
    '"upstream_status":"","upstream_connect_time":"","upstream_header_time":"",'
    '"upstream_response_time":"","limit_req":"REJECTED","limit_conn":""}'
)
CONNECTION_CAPPED = (
    '{"time":"2026-12-02T07:16:06+00:00","request_id":"4a4e91b7a1e27b804ac8b4f8a9a6b4e9",'
    '"remote_addr":"127.0.0.1","method":"GET","uri":"/api/v1/items/?skip=99&limit=20",'
    '"status":503,"bytes_sent":154,"request_time":0.001,"upstream_addr":"",'
    '"upstream_status":"","upstream_connect_time":"","upstream_header_time":"",'
    '"upstream_response_time":"","limit_req":"PASSED","limit_conn":"REJECTED"}'
)
APP_REFUSED = (
    '{"time":"2026-12-02T06:35:51+00:00","request_id":"7e6ad956b36d4a96b663c3797c771a0b",'
    '"remote_addr":"127.0.0.1","method":"POST","uri":"/api/v1/items/","status":503,'
    '"bytes_sent":124,"request_time":0.140,"upstream_addr":"127.0.0.1:36102",'
    '"upstream_status":"503","upstream_connect_time":"0.000","upstream_header_time":"0.140",'
    '"upstream_response_time":"0.140","limit_req":"PASSED","limit_conn":"PASSED"}'
)
CLIENT_GONE = (
    '{"time":"2026-12-02T06:35:52+00:00","request_id":"cd2e79809316ecdd257d3d44445a9431",'
    '"remote_addr":"127.0.0.1","method":"POST","uri":"/api/v1/items/","status":499,'
    '"bytes_sent":0,"request_time":5.001,"upstream_addr":"127.0.0.1:36102",'
    '"upstream_status":"-","upstream_connect_time":"0.000","upstream_header_time":"-",'
    '"upstream_response_time":"5.001","limit_req":"PASSED","limit_conn":"PASSED"}'
)
BAD_GATEWAY = (
    '{"time":"2026-12-02T06:14:17+00:00","request_id":"cd2e79809316ecdd257d3d44445a9432",'
    '"remote_addr":"127.0.0.1","method":"POST","uri":"/api/v1/items/","status":502,'
    '"bytes_sent":128,"request_time":0.001,"upstream_addr":"127.0.0.1:36102",'
    '"upstream_status":"502","upstream_connect_time":"0.000","upstream_header_time":"-",'
    '"upstream_response_time":"0.001","limit_req":"PASSED","limit_conn":"PASSED"}'
)
# One retry (proxy_next_upstream): the last upstream tried is the one that answered.
RETRIED_THEN_REFUSED = (
    '{"time":"2026-12-02T06:14:18+00:00","request_id":"cd2e79809316ecdd257d3d44445a9433",'
    '"remote_addr":"127.0.0.1","method":"GET","uri":"/api/v1/items/?skip=1&limit=20",'
    '"status":503,"bytes_sent":124,"request_time":0.004,'
    '"upstream_addr":"127.0.0.1:36102, 127.0.0.1:36102","upstream_status":"502, 503",'
    '"upstream_connect_time":"0.000, 0.000","upstream_header_time":"-, 0.003",'
    '"upstream_response_time":"0.001, 0.003","limit_req":"PASSED","limit_conn":"PASSED"}'
)


def test_a_log_line_gives_status_request_time_and_the_limits_verdicts() -> None:
    line = parse_line(RATE_LIMITED)
    assert line is not None
    assert line.uri == "/api/v1/items/?skip=12&limit=20"
    assert line.status == 429
    assert line.request_time_s == 0.0
    assert (line.limit_req, line.limit_conn, line.upstream_status) == ("REJECTED", "", "")
    app = parse_line(APP_REFUSED)
    assert app is not None and app.request_time_s == pytest.approx(0.140)
    assert parse_line("") is None
    assert parse_line("not json") is None
    assert parse_line('{"status":200}') is None  # no request_time: not our format
    assert parse_line(ADMITTED_GET[: len(ADMITTED_GET) // 2]) is None  # half-written


@pytest.mark.parametrize(
    ("text", "who"),
    [
        (RATE_LIMITED, NGINX_LIMIT_REQ),
        (CONNECTION_CAPPED, NGINX_LIMIT_CONN),
        (APP_REFUSED, APP_503),
        (RETRIED_THEN_REFUSED, APP_503),
        (ADMITTED_GET, None),
        (ADMITTED_POST, None),
        (CLIENT_GONE, None),
        (BAD_GATEWAY, None),
    ],
)
def test_each_refusal_is_put_on_the_layer_that_made_it(text: str, who: str | None) -> None:
    line = parse_line(text)
    assert line is not None
    assert refuser(line) == who


def test_a_run_is_split_into_admitted_refused_per_layer_and_the_rest() -> None:
    texts = [
        *[ADMITTED_GET] * 6,
        *[ADMITTED_POST] * 2,
        *[RATE_LIMITED] * 3,
        *[CONNECTION_CAPPED] * 2,
        APP_REFUSED,
        RETRIED_THEN_REFUSED,
        CLIENT_GONE,
        BAD_GATEWAY,
    ]
    lines = [parse_line(t) for t in texts]
    layers = attribute(line for line in lines if line is not None)
    assert layers.logged == 17
    assert layers.admitted.count == 8
    assert layers.admitted.p50_ms == pytest.approx(12)
    assert layers.admitted.p99_ms == pytest.approx(30)
    assert {who: st.count for who, st in layers.refused.items()} == {
        NGINX_LIMIT_REQ: 3,
        NGINX_LIMIT_CONN: 2,
        APP_503: 2,
    }
    assert layers.refused[APP_503].p99_ms == pytest.approx(140)
    assert {name: st.count for name, st in layers.refused_by_layer.items()} == {
        "app": 2,
        "nginx": 5,
    }
    assert layers.refused_by_layer["nginx"].p50_ms == pytest.approx(0)
    assert layers.refused_by_layer["nginx"].p99_ms == pytest.approx(1)
    assert layers.other == {499: 1, 502: 1}
    empty = attribute([])
    assert empty.logged == 0 and empty.admitted.count == 0 and not empty.refused


def test_a_slice_holds_the_complete_lines_written_since_its_mark(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(ADMITTED_GET + "\n")  # before the run
    view = LogSlice(log)
    view.mark()
    assert view.read() == []
    with log.open("a") as out:
        out.write(RATE_LIMITED + "\n" + APP_REFUSED + "\n" + CONNECTION_CAPPED[:40])
    assert view.read() == [RATE_LIMITED, APP_REFUSED]  # the half-written line waits
    with log.open("a") as out:
        out.write(CONNECTION_CAPPED[40:] + "\n")
    assert view.read() == [CONNECTION_CAPPED]
    missing = LogSlice(tmp_path / "none.log")
    missing.mark()
    assert missing.read() == []


def test_a_runs_slice_leaves_out_the_idle_probe_and_what_is_not_a_log_line() -> None:
    probe = ADMITTED_GET.replace("?skip=4711&limit=20", "?skip=0&limit=1")
    assert PROBE_PATH in probe
    layers = run_layers(
        [ADMITTED_GET, probe, probe, "", "garbage", RATE_LIMITED], ignore_uri=PROBE_PATH
    )
    assert layers.logged == 2
    assert layers.admitted.count == 1
    assert {who: st.count for who, st in layers.refused.items()} == {NGINX_LIMIT_REQ: 1}


# What the app's metrics port serves (prometheus_client, multiprocess: the
# workers' counters summed), trimmed to the families that matter here.
METRICS_BEFORE = """\
# HELP sluice_shed_total Multiprocess metric
# TYPE sluice_shed_total counter
sluice_shed_total{layer="app",reason="queue_full"} 10.0
sluice_shed_total{layer="pool",reason="db_pool_timeout"} 2.0
# HELP sluice_admitted_total Multiprocess metric
# TYPE sluice_admitted_total counter
sluice_admitted_total 5000.0
"""
METRICS_AFTER = """\
# HELP sluice_shed_total Multiprocess metric
# TYPE sluice_shed_total counter
sluice_shed_total{layer="app",reason="queue_full"} 130.0
sluice_shed_total{layer="app",reason="queue_wait_predicted"} 7.0
sluice_shed_total{layer="pool",reason="db_pool_timeout"} 2.0
# HELP sluice_admitted_total Multiprocess metric
# TYPE sluice_admitted_total counter
sluice_admitted_total 9000.0
"""


def test_the_app_says_why_it_refused_through_its_shed_counters() -> None:
    before = shed_counts(text_string_to_metric_families(METRICS_BEFORE))
    after = shed_counts(text_string_to_metric_families(METRICS_AFTER))
    assert before == {"app:queue_full": 10.0, "pool:db_pool_timeout": 2.0}
    assert counter_delta(before, after) == {"app:queue_full": 120, "app:queue_wait_predicted": 7}
    # A restarted app starts its counters again: what went down counts nothing.
    assert counter_delta(after, before) == {}


def _from(text: str, address: str) -> str:
    return text.replace('"remote_addr":"127.0.0.1"', f'"remote_addr":"{address}"')


def test_a_runs_slice_splits_by_the_clients_addresses() -> None:
    texts = [
        *[_from(ADMITTED_GET, "127.0.0.10")] * 3,  # the heavy client
        *[_from(RATE_LIMITED, "127.0.0.10")] * 5,
        _from(ADMITTED_POST, "127.0.0.11"),  # light ones
        _from(ADMITTED_GET, "127.0.0.12"),
        _from(APP_REFUSED, "127.0.0.12"),
        ADMITTED_GET,  # nobody's: the benchmark's own address
    ]
    lines = [line for line in map(parse_line, texts) if line is not None]
    assert lines[0].remote_addr == "127.0.0.10"
    groups = group_layers(
        lines,
        {"heavy": frozenset({"127.0.0.10"}), "light": frozenset({"127.0.0.11", "127.0.0.12"})},
    )
    assert groups["heavy"].logged == 8
    assert groups["heavy"].admitted.count == 3
    assert {who: st.count for who, st in groups["heavy"].refused.items()} == {NGINX_LIMIT_REQ: 5}
    assert groups["light"].logged == 3
    assert groups["light"].admitted.count == 2
    assert groups["light"].refused[APP_503].count == 1


def test_admitted_requests_within_the_target_and_the_goodput_deadline_are_counted() -> None:
    slow = ADMITTED_GET.replace('"request_time":0.012', '"request_time":0.400')
    late = ADMITTED_GET.replace('"request_time":0.012', '"request_time":1.200')
    layers = run_layers([ADMITTED_GET, ADMITTED_POST, slow, late, APP_REFUSED])
    assert layers.admitted.count == 4
    assert layers.admitted_within_target == 2  # 12 and 30 ms; not 400 ms
    assert layers.admitted_within_deadline == 3  # and 400 ms; not 1.2 s


def test_nginx_names_its_own_refusals_in_the_log() -> None:
    """The `refused` field says which of nginx's limits refused, whatever the statuses."""

    def line(status: int, upstream: str, refused: str) -> LogLine:
        return LogLine(
            uri="/api/v1/items/",
            status=status,
            request_time_s=0.0,
            upstream_status=upstream,
            limit_req="",
            limit_conn="",
            refused=refused,
        )

    assert refuser(line(503, "502", "connection_limit")) == NGINX_LIMIT_CONN
    assert refuser(line(503, "", "client_connection_limit")) == NGINX_CLIENT_CONN
    assert refuser(line(429, "", "signup_rate_limited")) == NGINX_LIMIT_REQ
    assert refuser(line(502, "502", "upstream_unavailable")) is None  # a failure, not a refusal
