"""The benchmark's arithmetic: schedule, statistics, capacity search, integrity, workload."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest

from bench.criteria import CAPACITY_MIN_OK, LATENCY_TARGET_MS
from bench.database import check_integrity
from bench.loadgen import Request, serialise
from bench.schedule import arrival_count, due_by, poisson_offsets, uniform_offsets
from bench.search import CapacitySearch
from bench.stats import NOT_SENT, TIMEOUT, Outcome, meets_target, percentile, summarize
from bench.workload import (
    MAX_CLIENTS,
    SEEDED_ITEMS,
    build_requests,
    client_address,
    client_emails,
    merge,
)


def ok(latency_s: float, kind: str = "get", tag: str = "") -> Outcome:
    return Outcome(kind=kind, status=200, latency_s=latency_s, lag_s=0.001, tag=tag)


# -- schedule ---------------------------------------------------------------


def test_uniform_schedule_is_evenly_spaced_and_independent_of_responses() -> None:
    offsets = uniform_offsets(200, 2.5)
    assert len(offsets) == 500 == arrival_count(200, 2.5)
    assert offsets[0] == 0.0
    assert all(math.isclose(b - a, 0.005) for a, b in itertools.pairwise(offsets))


def test_due_by_counts_requests_at_or_before_elapsed_time() -> None:
    offsets = uniform_offsets(10, 1)  # 0.0, 0.1, ..., 0.9
    assert due_by(offsets, -0.01) == 0
    assert due_by(offsets, 0.0) == 1
    assert due_by(offsets, 0.25) == 3
    assert due_by(offsets, 5.0) == 10


def test_poisson_schedule_has_the_mean_rate_and_is_reproducible() -> None:
    offsets = poisson_offsets(500, 20, seed=1)
    assert offsets == poisson_offsets(500, 20, seed=1)
    assert offsets == sorted(offsets)
    mean_gap = offsets[-1] / (len(offsets) - 1)
    assert mean_gap == pytest.approx(1 / 500, rel=0.05)


@pytest.mark.parametrize(("rate", "duration"), [(0, 1), (10, 0), (-1, 1)])
def test_schedule_refuses_empty_runs(rate: float, duration: float) -> None:
    with pytest.raises(ValueError):
        arrival_count(rate, duration)


# -- statistics -------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_summary_separates_goodput_rejections_timeouts_and_not_sent() -> None:
    outcomes = [
        *(ok(0.010) for _ in range(90)),
        ok(1.5),  # a 2xx, but too late to count as goodput
        Outcome(
            kind="get", status=503, latency_s=0.004, lag_s=0.0, body=b'{"reason":"queue_full"}'
        ),
        Outcome(
            kind="get",
            status=429,
            latency_s=0.002,
            lag_s=0.0,
            body=b'{"reason":"rate_limited","layer":"nginx"}',
        ),
        Outcome(kind="post", status=500, latency_s=0.020, lag_s=0.0),
        Outcome(kind="post", status=0, latency_s=5.0, lag_s=0.0, error=TIMEOUT),
        Outcome(kind="get", status=0, latency_s=0.0, lag_s=0.3, error=NOT_SENT),
        Outcome(kind="get", status=0, latency_s=0.001, lag_s=0.0, error="ConnectionResetError"),
        *(ok(0.010) for _ in range(3)),
    ]
    s = summarize(outcomes, offered_rps=50, duration_s=2)
    assert {layer: st.count for layer, st in s.refused_by_layer.items()} == {"app": 1, "nginx": 1}
    assert s.refused_by_layer["nginx"].p50_ms == pytest.approx(2)
    assert s.lag_p50_ms == pytest.approx(1)  # sent requests only: not the not-sent one's 0.3 s
    assert s.lag_p99_ms == pytest.approx(1)
    assert s.scheduled == 100
    assert s.sent == 99
    assert s.ok == 94
    assert s.goodput_rps == 93 / 2
    assert s.ok_p50_ms == pytest.approx(10)
    assert {code: st.count for code, st in s.rejected.items()} == {429: 1, 503: 1}
    assert s.rejection_p99_ms == pytest.approx(4)
    assert {key: st.count for key, st in s.reasons.items()} == {
        "429 nginx:rate_limited": 1,
        "500 unknown": 1,
        "503 app:queue_full": 1,
    }
    assert {code: st.count for code, st in s.http_errors.items()} == {500: 1}
    assert s.server_errors == 1
    assert s.timeouts == 1
    assert s.not_sent == 1
    assert s.client_errors == {"ConnectionResetError": 1}
    assert s.errors == 6
    assert s.error_rate == pytest.approx(0.06)


def test_capacity_criterion_is_99_percent_2xx_and_2xx_p99_within_target() -> None:
    def meets(outcomes: list[Outcome]) -> bool:
        summary = summarize(outcomes, offered_rps=100, duration_s=2)
        return meets_target(summary, p99_ms=LATENCY_TARGET_MS, min_ok_share=CAPACITY_MIN_OK)

    fast = [ok(0.010) for _ in range(200)]
    assert meets(fast)
    assert not meets([ok(0.300) for _ in range(200)])
    refused = [Outcome("get", 503, 0.001, 0.0) for _ in range(3)]
    # Refusals count as failures: 198 of 200 is 99 % 2xx, 197 is not.
    assert meets([*fast[:198], *refused[:2]])
    assert not meets([*fast[:197], *refused])
    assert not meets([Outcome("get", 0, 5.0, 0.0, error=TIMEOUT)])


# -- capacity search --------------------------------------------------------


def _search(true_capacity: float, **options: float) -> CapacitySearch:
    search = CapacitySearch(**{"start": 50, "max_rate": 100_000, **options})  # type: ignore[arg-type]
    while (rate := search.next_rate()) is not None:
        search.record(rate, rate <= true_capacity)
    return search


@pytest.mark.parametrize("true_capacity", [37, 300, 777, 2500])
def test_search_brackets_capacity_within_its_resolution(true_capacity: float) -> None:
    search = _search(true_capacity, resolution=0.05, max_steps=20)
    assert search.capacity <= true_capacity
    assert search.capacity >= true_capacity / 1.05 - 1


def test_search_stops_at_the_generator_ceiling() -> None:
    search = _search(10_000, max_rate=1500)
    assert search.capacity == 1500
    assert max(rate for rate, _ in search.history) == 1500


def test_search_gives_up_below_its_minimum_rate() -> None:
    search = _search(0, min_rate=5)
    assert search.capacity == 0
    assert all(not passed for _, passed in search.history)


def test_search_is_bounded_by_max_steps() -> None:
    search = _search(300, max_steps=3)
    assert len(search.history) == 3


def test_a_failed_step_is_tried_again_before_it_counts() -> None:
    search = CapacitySearch(start=50, max_rate=100_000, resolution=0.05, max_steps=30)
    hiccups = {100.0}  # the first try at 100 rps fails for a reason of the machine's
    while (rate := search.next_rate()) is not None:
        search.record(rate, rate <= 300 and rate not in hiccups)
        hiccups.discard(rate)
    assert [ok for r, ok in search.history if r == 100] == [False, True]
    assert 300 / 1.05 - 1 <= search.capacity <= 300
    # A real failure fails twice, and the search stops above it no more.
    assert [ok for r, ok in search.history if r == 400] == [False, False]


# -- integrity --------------------------------------------------------------


def test_integrity_tells_lost_writes_from_unacknowledged_commits() -> None:
    outcomes = [
        ok(0.01, "post", "t-acked"),
        ok(0.01, "post", "t-lost"),
        Outcome("post", 0, 5.0, 0.0, error=TIMEOUT, tag="t-timeout-committed"),
        Outcome("post", 0, 5.0, 0.0, error=TIMEOUT, tag="t-timeout-not-committed"),
        Outcome("post", 503, 0.01, 0.0, tag="t-rejected-committed"),
        Outcome("post", 0, 0.0, 0.0, error=NOT_SENT, tag="t-not-sent"),
        ok(0.01),  # a read: ignored
    ]
    found = {
        "t-acked": 2,  # one duplicate
        "t-timeout-committed": 1,
        "t-rejected-committed": 1,
        "t-never-sent": 1,
    }
    result = check_integrity(outcomes, found)
    assert result.acknowledged == 2
    assert result.acknowledged_missing == 1
    assert result.unacknowledged == 4
    assert result.committed_after_timeout == 1
    assert result.committed_after_rejection == 1
    assert result.committed_after_other == 0
    assert result.committed_unacknowledged == 2
    assert result.duplicates == 1
    assert result.unknown == 1


# -- workload ---------------------------------------------------------------


def test_workload_mix_pages_and_unique_titles() -> None:
    requests = build_requests(5000, run_id="r1", seed=3, tokens=["t"])
    assert requests == build_requests(5000, run_id="r1", seed=3, tokens=["t"])
    posts = [r for r in requests if r.kind == "post"]
    gets = [r for r in requests if r.kind == "get"]
    assert len(posts) / len(requests) == pytest.approx(0.2, abs=0.02)
    titles = [r.tag for r in posts]
    assert len(set(titles)) == len(titles)
    assert all(t.startswith("bench-r1-") for t in titles)
    skips = [int(r.path.split("skip=")[1].split("&")[0]) for r in gets]
    assert min(skips) >= 0 and max(skips) <= SEEDED_ITEMS - 20
    assert all(r.path.endswith("&limit=20") for r in gets)
    assert all(r.headers["Authorization"] == "Bearer t" for r in requests)
    assert all(r.headers["Content-Type"] == "application/json" for r in posts)


def test_every_request_is_sent_by_one_client_each_with_its_share() -> None:
    tokens = [f"token-{i}" for i in range(20)]
    requests = build_requests(10_000, run_id="r1", seed=3, tokens=tokens)
    senders = Counter(r.headers["Authorization"] for r in requests)
    assert set(senders) == {f"Bearer token-{i}" for i in range(20)}
    assert all(400 <= n <= 600 for n in senders.values())  # 500 each, give or take
    # Per client, the same mix: POSTs stay about 20 % of each client's requests.
    for token in ("Bearer token-0", "Bearer token-19"):
        mine = [r for r in requests if r.headers["Authorization"] == token]
        assert sum(r.kind == "post" for r in mine) / len(mine) == pytest.approx(0.2, abs=0.06)
    assert requests == build_requests(10_000, run_id="r1", seed=3, tokens=tokens)
    # The mix does not depend on the number of clients: one client is the old workload.
    one = build_requests(10_000, run_id="r1", seed=3, tokens=["solo"])
    assert [(r.method, r.path, r.tag) for r in one] == [(r.method, r.path, r.tag) for r in requests]
    with pytest.raises(ValueError):
        build_requests(1, run_id="r1", seed=3, tokens=[])


def test_client_accounts_are_distinct() -> None:
    assert client_emails(3) == ["bench-0@example.com", "bench-1@example.com", "bench-2@example.com"]
    assert len(set(client_emails(20))) == 20
    with pytest.raises(ValueError):
        client_emails(0)


def test_request_is_serialised_as_http11_with_length() -> None:
    wire = serialise(
        Request("POST", "/api/v1/items/", "post", body=b'{"title":"x"}'),
        host="127.0.0.1:8000",
        headers={"Authorization": "Bearer t"},
    )
    head, body = wire.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /api/v1/items/ HTTP/1.1"
    assert "Host: 127.0.0.1:8000" in lines
    assert "Authorization: Bearer t" in lines
    assert "Content-Length: 13" in lines
    assert body == b'{"title":"x"}'
    get = serialise(Request("GET", "/x", "get"), host="h", headers={})
    assert b"Content-Length" not in get


def test_each_client_has_an_address_of_its_own() -> None:
    addresses = [client_address(i) for i in range(MAX_CLIENTS)]
    assert addresses[:2] == ["127.0.0.10", "127.0.0.11"]
    assert addresses[-1] == "127.0.0.253"
    assert len(set(addresses)) == MAX_CLIENTS
    assert "127.0.0.1" not in addresses  # the benchmark's own probes stay apart
    with pytest.raises(ValueError):
        client_address(MAX_CLIENTS)


def test_requests_name_their_client_and_streams_merge_in_time_order() -> None:
    light = build_requests(30, run_id="r-l", seed=1, tokens=["b", "c"], clients=[1, 2])
    assert {r.client for r in light} == {1, 2}
    assert all(
        r.headers["Authorization"] == {1: "Bearer b", 2: "Bearer c"}[r.client] for r in light
    )
    heavy = build_requests(4, run_id="r-h", seed=1, tokens=["a"], clients=[0])
    offsets, merged = merge(([0.0, 0.1, 0.2, 0.3], heavy), ([0.05 * i for i in range(30)], light))
    assert offsets == sorted(offsets) and len(merged) == 34
    assert merged[0] is heavy[0] and merged[1] is light[0]  # a tie keeps stream order
    assert [r for r in merged if r.client == 0] == heavy
    with pytest.raises(ValueError):
        build_requests(1, run_id="r", seed=1, tokens=["a"], clients=[0, 1])
