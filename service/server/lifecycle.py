"""The worker's life cycle as the app sees it: draining once shutdown has begun."""

from __future__ import annotations

import threading

# Set by the worker (service/server/worker.py) when it starts to shut down; /readyz
# then answers 503 so a load balancer stops sending it new work.
draining = threading.Event()
