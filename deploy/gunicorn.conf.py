"""Gunicorn settings for Sluice, for every deployment shape.

All values come from the settings object (environment), sized by
service/sizing.py. The master also serves the Prometheus metrics of all
workers (multiprocess mode) on the internal metrics port.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from service.settings import get_settings

_settings = get_settings()
_limits = _settings.limits

# The app port (accepting only while a worker has a slot free) and the probe
# port (always accepting), service/server/gate.py.
bind = [
    f"{_settings.bind_host}:{_settings.bind_port}",
    f"{_settings.bind_host}:{_settings.probe_port}",
]
workers = _limits.workers
# Uvicorn's worker, except that it accepts on the app port only into a free
# slot, and stopping never cuts an idle keep-alive connection a client may be
# reusing (a reload would answer 502).
worker_class = "service.server.worker.SluiceUvicornWorker"
# The kernel accept queue in front of the workers: bounded, and measured by
# the master (sluice_listen_backlog).
backlog = _limits.backlog
timeout = _settings.worker_timeout_s
graceful_timeout = _settings.graceful_timeout_s
# For clients that keep connections alive (nginx does not: a connection per
# request); long, so the app is rarely the side closing an idle one.
keepalive = _settings.keepalive_s
accesslog = None
errorlog = "-"
loglevel = _settings.log_level
proc_name = "sluice"
# Not used, and its default path in $HOME would collide between stacks.
control_socket_disable = True

# prometheus-client picks its multiprocess backend from this variable when it
# is first imported, in every worker, so it must be set before any fork.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_settings.metrics_multiproc_dir)


def on_starting(server: Any) -> None:
    # Files of a previous run would add stale counts to the new one.
    shutil.rmtree(_settings.metrics_multiproc_dir, ignore_errors=True)
    _settings.metrics_multiproc_dir.mkdir(parents=True)


def when_ready(server: Any) -> None:
    from service.server.metrics_server import start_metrics_server

    start_metrics_server(
        host=_settings.metrics_host,
        port=_settings.metrics_port,
        listen_port=_settings.bind_port,
        backlog=backlog,
    )


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
