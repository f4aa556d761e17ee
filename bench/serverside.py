"""What the servers recorded about one run: who refused, and how fast they answered.

Two sources, read before and after the run:

- nginx's JSON access log (`<state>/logs/access.log`, nginx/templates/nginx.conf.template):
  per request its status, `$request_time` (first byte read to last byte
  written, millisecond resolution), `$limit_req_status`, `$limit_conn_status`
  and `$upstream_status`. From them: which layer refused each request, and the
  server's own latency beside the client's (which counts from the scheduled
  send, so the generator's lag and the kernel's queues are in it). Its
  `remote_addr` names the client, since every benchmark client sends from
  an address of its own (bench.workload.client_address): a run's slice can be
  split by group of clients (the fairness scenario's heavy and light ones).
- the app's `sluice_shed_total{layer,reason}` counters (SLUICE_METRICS_URL):
  why the app refused, which nginx's log cannot say.

nginx writes its log through a 32 KiB buffer flushed every second, so a run's
slice is read FLUSH_WAIT_S after the run, and a run starts FLUSH_WAIT_S after
whatever came before it (warm-up, the previous run's probes) so none of that
lands in its slice. A request nginx finishes after the slice is read (a
client that gave up long before) is missed.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from bench.criteria import LATENCY_TARGET_MS
from bench.stats import GOODPUT_DEADLINE_S, StatusStats, latency_stats

FLUSH_WAIT_S = 1.5  # access_log ... buffer=32k flush=1s
SHED_COUNTER = "sluice_shed_total"
# Who refused a request, as nginx's access log tells it.
NGINX_LIMIT_REQ = "nginx 429 limit_req"  # the per-client rate limits
NGINX_CLIENT_CONN = "nginx 503 client_connection_limit"  # one client's share, while saturated
NGINX_LIMIT_CONN = "nginx 503 connection_limit"  # the app's cap
APP_503 = "app 503"  # the app (admission control, pool, PgBouncer, database): see the counters
REFUSERS = (NGINX_LIMIT_REQ, NGINX_CLIENT_CONN, NGINX_LIMIT_CONN, APP_503)
# nginx's access log names each refusal of its own ("refused", nginx.conf.template).
_NGINX_REFUSED = {
    "rate_limited": NGINX_LIMIT_REQ,
    "login_rate_limited": NGINX_LIMIT_REQ,
    "signup_rate_limited": NGINX_LIMIT_REQ,
    "probe_rate_limited": NGINX_LIMIT_REQ,
    "client_connection_limit": NGINX_CLIENT_CONN,
    "connection_limit": NGINX_LIMIT_CONN,
}


@dataclass(frozen=True, slots=True)
class LogLine:
    """The fields of one access-log entry the attribution needs."""

    uri: str
    status: int
    request_time_s: float
    upstream_status: str  # "" when nginx answered itself; "502, 503" after a retry
    limit_req: str  # $limit_req_status: PASSED, REJECTED, DELAYED, ... or ""
    limit_conn: str  # $limit_conn_status: PASSED, REJECTED, ... or ""
    remote_addr: str = ""
    refused: str = ""  # nginx's own refusal, by reason ("" when it did not refuse)


def parse_line(text: str) -> LogLine | None:
    """One line of the `sluice_json` log format; None if it is not one."""
    try:
        data = json.loads(text)
        return LogLine(
            uri=str(data.get("uri", "")),
            status=int(data["status"]),
            request_time_s=float(data["request_time"]),
            upstream_status=str(data.get("upstream_status", "")),
            limit_req=str(data.get("limit_req", "")),
            limit_conn=str(data.get("limit_conn", "")),
            remote_addr=str(data.get("remote_addr", "")),
            refused=str(data.get("refused", "")),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def refuser(line: LogLine) -> str | None:
    """Which of REFUSERS turned this request away; None when none did."""
    if line.refused in _NGINX_REFUSED:
        return _NGINX_REFUSED[line.refused]
    if line.status == 429 and line.limit_req == "REJECTED":
        return NGINX_LIMIT_REQ
    if line.status == 503 and line.limit_conn == "REJECTED":
        return NGINX_LIMIT_CONN
    last_upstream = line.upstream_status.rsplit(",", 1)[-1].strip()
    if line.status == 503 and last_upstream == "503":
        return APP_503
    return None


@dataclass(frozen=True)
class Layers:
    """One run's requests as nginx logged them. Latencies are `$request_time`."""

    logged: int
    admitted: StatusStats  # 2xx
    refused: dict[str, StatusStats] = field(default_factory=dict)  # by REFUSERS
    refused_by_layer: dict[str, StatusStats] = field(default_factory=dict)  # "nginx", "app"
    refused_all: StatusStats = field(default_factory=lambda: latency_stats([]))  # every refusal
    other: dict[int, int] = field(default_factory=dict)  # any other status (499: client gone)
    admitted_within_target: int = 0  # 2xx within the latency target (criteria)
    admitted_within_deadline: int = 0  # 2xx within the goodput deadline (stats)


def attribute(lines: Iterable[LogLine]) -> Layers:
    """Split the logged requests into admitted, refused by each layer, and the rest. Pure."""
    target_s = LATENCY_TARGET_MS / 1000
    within_target = within_deadline = 0
    admitted: list[float] = []
    refused: dict[str, list[float]] = defaultdict(list)
    layers: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    other: dict[int, int] = defaultdict(int)
    logged = 0
    for line in lines:
        logged += 1
        who = refuser(line)
        if who is not None:
            refused[who].append(line.request_time_s)
            layers[who.split(" ", 1)[0]].append(line.request_time_s)
            every.append(line.request_time_s)
        elif 200 <= line.status < 300:
            admitted.append(line.request_time_s)
            within_target += line.request_time_s <= target_s
            within_deadline += line.request_time_s <= GOODPUT_DEADLINE_S
        else:
            other[line.status] += 1
    return Layers(
        logged=logged,
        admitted=latency_stats(admitted),
        refused={who: latency_stats(refused[who]) for who in REFUSERS if who in refused},
        refused_by_layer={name: latency_stats(values) for name, values in sorted(layers.items())},
        refused_all=latency_stats(every),
        other=dict(sorted(other.items())),
        admitted_within_target=within_target,
        admitted_within_deadline=within_deadline,
    )


def run_lines(texts: Iterable[str], *, ignore_uri: str = "") -> list[LogLine]:
    """A run's slice of the log as lines, without those that are not its requests."""
    parsed = (parse_line(text) for text in texts)
    return [line for line in parsed if line is not None and line.uri != ignore_uri]


def run_layers(texts: Iterable[str], *, ignore_uri: str = "") -> Layers:
    """`attribute` over a run's slice of the log, without lines that are not its requests."""
    return attribute(run_lines(texts, ignore_uri=ignore_uri))


def group_layers(
    lines: Iterable[LogLine], groups: Mapping[str, frozenset[str]]
) -> dict[str, Layers]:
    """`attribute` for each named group of client addresses. Pure."""
    lines = list(lines)
    return {
        name: attribute(line for line in lines if line.remote_addr in addresses)
        for name, addresses in groups.items()
    }


def metric_families(url: str) -> Iterable[Metric]:
    """The metric families a Prometheus endpoint exposes now."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return text_string_to_metric_families(text)


def shed_counts(families: Iterable[Metric]) -> dict[str, float]:
    """`sluice_shed_total` by "layer:reason" (workers summed). Pure."""
    counts: dict[str, float] = defaultdict(float)
    for family in families:
        for sample in family.samples:
            if sample.name == SHED_COUNTER:
                labels = sample.labels
                counts[f"{labels.get('layer', '?')}:{labels.get('reason', '?')}"] += sample.value
    return dict(counts)


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """What each counter gained in between (a counter that went down counts 0)."""
    gained = {key: round(value - before.get(key, 0.0)) for key, value in after.items()}
    return {key: n for key, n in sorted(gained.items()) if n > 0}


@dataclass(frozen=True)
class ServerSide:
    """One run as the servers saw it (None parts: the deployment does not record it)."""

    layers: Layers | None  # nginx's access log
    shed: dict[str, int] | None  # the app's refusals, "layer:reason" -> count
    groups: dict[str, Layers] = field(default_factory=dict)  # by group of client addresses


class LogSlice:
    """The complete lines appended to a log file since `mark()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def read(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is the next slice's
        self._offset += len(complete)
        return complete.decode(errors="replace").splitlines()


class ServerRecorder:
    """Brackets one run: `start()` before it, `finish()` after it and its drain."""

    def __init__(
        self,
        *,
        access_log: Path | None,
        metrics_url: str | None,
        ignore_uri: str = "",
        groups: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._log = LogSlice(access_log) if access_log is not None else None
        self._metrics_url = metrics_url
        self._ignore_uri = ignore_uri  # requests that are not the run's (the idle probe)
        self._groups = dict(groups or {})  # group name -> its clients' addresses
        self._shed_before: dict[str, float] | None = None

    @property
    def records(self) -> bool:
        return self._log is not None or self._metrics_url is not None

    def _shed(self) -> dict[str, float] | None:
        """The counters now; None when the metrics port does not answer (the run goes on)."""
        if self._metrics_url is None:
            return None
        try:
            return shed_counts(metric_families(self._metrics_url))
        except OSError:
            return None

    def start(self) -> None:
        if self._log is not None:
            time.sleep(FLUSH_WAIT_S)  # what came before is in the log, not in this run's slice
            self._log.mark()
        self._shed_before = self._shed()

    def finish(self) -> ServerSide | None:
        if not self.records:
            return None
        before, after = self._shed_before, self._shed()
        shed = counter_delta(before, after) if before is not None and after is not None else None
        layers, groups = None, {}
        if self._log is not None:
            time.sleep(FLUSH_WAIT_S)
            lines = run_lines(self._log.read(), ignore_uri=self._ignore_uri)
            layers = attribute(lines)
            groups = group_layers(lines, self._groups)
        return ServerSide(layers=layers, shed=shed, groups=groups)
