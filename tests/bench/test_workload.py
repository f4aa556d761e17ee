"""Signing the clients up and logging them in, against a small local HTTP server.

The server answers as nginx's login limit does once its burst is spent: 429
with a Retry-After, then lets requests through again.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.workload import WorkloadError, client_address, client_emails, log_in, sign_up


class _Server(ThreadingHTTPServer):
    def __init__(self, refuse_next: dict[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _Auth)
        self.refuse_next = dict(refuse_next)  # path -> how many 429s before letting one through
        self.seen: list[tuple[str, int]] = []  # (path, status) of every answer
        self.senders: dict[str, set[str]] = {}  # account -> the addresses it was sent from


class _Auth(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.refuse_next.get(self.path, 0) > 0:
            self.server.refuse_next[self.path] -= 1
            self._answer(429, {"reason": "rate_limited", "layer": "nginx"}, retry_after="0")
        elif self.path == "/api/v1/login/access-token":
            form = urllib.parse.parse_qs(body.decode())
            user = form["username"][0]
            self.server.senders.setdefault(user, set()).add(self.client_address[0])
            if form["password"][0] != "bench-password-not-secret":
                self._answer(400, {"reason": "invalid_credentials"})
            else:
                self._answer(200, {"access_token": f"token-for-{user}", "token_type": "bearer"})
        elif self.path == "/api/v1/users/signup":
            email = json.loads(body)["email"]
            self.server.senders.setdefault(email, set()).add(self.client_address[0])
            status = 409 if email == "bench-1@example.com" else 201  # one exists already
            self._answer(status, {"email": email})
        else:
            self._answer(404, {"reason": "not_found"})

    def _answer(self, status: int, body: dict[str, str], retry_after: str = "") -> None:
        self.server.seen.append((self.path, status))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _server(refuse_next: dict[str, int]) -> Iterator[tuple[str, _Server]]:
    server = _Server(refuse_next)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server
    finally:
        server.shutdown()
        server.server_close()


def test_each_client_is_signed_up_and_logged_in_once_through_rate_limit_refusals() -> None:
    login = "/api/v1/login/access-token"
    with _server({login: 3, "/api/v1/users/signup": 1}) as (url, server):
        emails = client_emails(4)
        sign_up(url, emails)  # 409 for an existing account is fine
        tokens = log_in(url, emails)
    seen = server.seen
    assert tokens == [f"token-for-bench-{i}@example.com" for i in range(4)]
    # Each client signed up and logged in from its own address, as it sends its load.
    assert server.senders == {email: {client_address(i)} for i, email in enumerate(emails)}
    assert [status for path, status in seen if path == login] == [429, 429, 429, 200, 200, 200, 200]
    assert sorted(status for path, status in seen if path != login) == [201, 201, 201, 409, 429]


def test_a_refused_login_that_is_not_a_rate_limit_fails_the_run() -> None:
    with _server({}) as (url, _), pytest.raises(WorkloadError, match="login of bench-0"):
        log_in(url, ["bench-0@example.com"], password="wrong")
