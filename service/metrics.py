"""Prometheus metric families of the app, in multiprocess mode.

Gunicorn's config points PROMETHEUS_MULTIPROC_DIR at a fresh directory before
any worker starts; each worker writes its own files and the master serves the
aggregate on the internal metrics port (deploy/gunicorn.conf.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "sluice_http_requests_total",
    "Requests answered by the app, by route template, method and status.",
    ["route", "method", "status"],
)
REQUEST_DURATION = Histogram(
    "sluice_http_request_duration_seconds",
    "Time from the app receiving a request to its last response byte.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
REQUEST_QUEUE_TIME = Histogram(
    "sluice_request_queue_seconds",
    "Time between nginx receiving a request (X-Request-Start) and the app starting it.",
    buckets=WAIT_BUCKETS,
)
IN_FLIGHT = Gauge(
    "sluice_admission_in_flight",
    "Request slots held (running requests and accepted connections not yet started).",
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "sluice_admission_queue_depth",
    "Requests waiting in the admission queue.",
    multiprocess_mode="livesum",
)
ADMISSION_LIMIT = Gauge(
    "sluice_admission_limit",
    "Admission limits per worker summed over live workers (kind: in_flight or queue).",
    ["kind"],
    multiprocess_mode="livesum",
)
STANDING_QUEUE = Gauge(
    "sluice_admission_standing_queue",
    "1 while a worker sees a standing queue (every request of an interval waited longer "
    "than the wait budget) and sheds what waited longer; 0 otherwise.",
    multiprocess_mode="livemax",
)
ADMISSION_WAIT = Histogram(
    "sluice_admission_wait_seconds",
    "Time admitted requests waited in the admission queue.",
    buckets=WAIT_BUCKETS,
)
ADMITTED = Counter(
    "sluice_admitted_total",
    "Requests admitted by the app's admission control.",
)
SHED = Counter(
    "sluice_shed_total",
    "Requests refused, by the layer that refused them and why.",
    ["layer", "reason"],
)
DB_POOL_SIZE = Gauge(
    "sluice_db_pool_size",
    "SQLAlchemy pool size (connections kept), summed over live workers.",
    multiprocess_mode="livesum",
)
DB_POOL_CHECKED_OUT = Gauge(
    "sluice_db_pool_checked_out",
    "Connections checked out of the SQLAlchemy pool.",
    multiprocess_mode="livesum",
)
DB_POOL_OVERFLOW = Gauge(
    "sluice_db_pool_overflow",
    "Connections open beyond pool_size.",
    multiprocess_mode="livesum",
)
DB_POOL_WAITERS = Gauge(
    "sluice_db_pool_waiters",
    "Threads waiting for a pool connection.",
    multiprocess_mode="livesum",
)
DB_CHECKOUT_WAIT = Histogram(
    "sluice_db_pool_checkout_wait_seconds",
    "Time to check a connection out of the SQLAlchemy pool.",
    buckets=WAIT_BUCKETS,
)
DB_POOL_TIMEOUTS = Counter(
    "sluice_db_pool_timeouts_total",
    "Checkouts that gave up after pool_timeout.",
)
DB_ERRORS = Counter(
    "sluice_db_errors_total",
    "Database errors mapped to 503, by reason.",
    ["reason"],
)
