"""The default Alertmanager receiver: every notification, one JSON line in a file.

    python deploy/alert_receiver.py --listen 127.0.0.1:9095 --file alerts.jsonl

Alertmanager's default route (deploy/alertmanager/) posts each notification
to this webhook, which appends the body as one line to `--file` and prints a
one-line summary to stdout, so an operator sees every alert without a mail
server or a pager: `tail -f <state>/alerts.jsonl` on the local stack,
`docker compose logs alert-receiver` in compose, `kubectl logs` in Kubernetes.
Replace the receiver in the Alertmanager config to page someone instead.

Standard library only: the compose and Kubernetes shapes run this file from
the app image with no dependency of the launcher's.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Alertmanager's notifications are a few KiB; refuse anything absurd.
MAX_BODY_BYTES = 1 << 20


def summary(notification: dict[str, Any]) -> str:
    """`firing SluicePgBouncerDown (1 alert)` for the log."""
    name = notification.get("groupLabels", {}).get("alertname") or notification.get(
        "commonLabels", {}
    ).get("alertname", "?")
    count = len(notification.get("alerts", []))
    return f"{notification.get('status', '?')} {name} ({count} alert{'s' * (count != 1)})"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        # Readiness for the launcher and the container probes.
        self._answer(HTTPStatus.OK if self.path == "/-/ready" else HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self._answer(HTTPStatus.BAD_REQUEST)
            return
        try:
            notification = json.loads(self.rfile.read(length))
        except ValueError:
            self._answer(HTTPStatus.BAD_REQUEST)
            return
        if not isinstance(notification, dict):
            self._answer(HTTPStatus.BAD_REQUEST)
            return
        line = json.dumps(notification, separators=(",", ":"), sort_keys=True)
        with self.server.lock, self.server.file.open("a") as out:
            out.write(line + "\n")
        print(summary(notification), flush=True)
        self._answer(HTTPStatus.OK)

    def _answer(self, status: HTTPStatus) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one summary line per notification is the log


class _Server(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], file: Path) -> None:
        super().__init__(address, _Handler)
        self.file = file
        self.lock = threading.Lock()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="host:port for Alertmanager's webhook")
    parser.add_argument("--file", required=True, type=Path, help="appends one JSON line each")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    args.file.parent.mkdir(parents=True, exist_ok=True)
    server = _Server((host, int(port)), args.file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"alert receiver on {args.listen}, appending to {args.file}", flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
