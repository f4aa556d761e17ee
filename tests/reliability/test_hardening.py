"""Hardening: refused insecure settings, nothing internal reachable or leaked."""

from __future__ import annotations

import socket
import subprocess

import httpx
import pytest

from tests.reliability.conftest import new_user
from tests.reliability.load import LEAK_MARKERS
from tests.stackctl import ROOT, RunningStack, clean_environ, run_gunicorn

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
STRONG_SECRET = "k" * 48
CLOSE_HEADERS = "Host: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({}, "SLUICE_SECRET_KEY"),
        ({"SLUICE_SECRET_KEY": "short-secret-value"}, "SLUICE_SECRET_KEY"),
        ({"SLUICE_SECRET_KEY": STRONG_SECRET}, "SLUICE_DB_PASSWORD"),
        (
            {"SLUICE_SECRET_KEY": STRONG_SECRET, "SLUICE_DB_PASSWORD": "postgres"},
            "SLUICE_DB_PASSWORD",
        ),
    ],
)
def test_production_refuses_to_start_with_default_secrets(
    overrides: dict[str, str], setting: str
) -> None:
    """Gunicorn itself, in production mode, exits naming the setting (and not its value)."""
    env = clean_environ(
        SLUICE_ENVIRONMENT="production",
        SLUICE_BIND_PORT="27290",
        SLUICE_METRICS_PORT="27291",
        SLUICE_METRICS_MULTIPROC_DIR=str(ROOT / ".sluice-test-refusal-metrics"),
        **overrides,
    )
    result = run_gunicorn(env)
    assert result.returncode != 0
    assert setting in result.stderr, result.stderr[-2000:]
    assert "SLUICE_ENVIRONMENT=production" in result.stderr
    for value in overrides.values():
        assert value not in result.stderr, "the refused value was echoed into the log"


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_internal_endpoints_are_not_reachable_through_nginx(edge_stack: RunningStack) -> None:
    """Metrics, stub_status, PgBouncer and PostgreSQL: not through the public listener."""
    env = edge_stack.env
    # They do exist on their private listeners...
    assert b"sluice_" in httpx.get(env["SLUICE_METRICS_URL"], timeout=10).content
    assert b"Active connections" in httpx.get(env["SLUICE_NGINX_STATUS_URL"], timeout=10).content
    internal_ports = [
        int(env["SLUICE_METRICS_PORT"]),
        edge_stack.ports["nginx_status"],
        int(env["PGBOUNCER_LISTEN_PORT"]),
        int(env["POSTGRES_PORT"]),
    ]
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        for path in (
            "/metrics",
            "/metrics/",
            "//metrics",
            "/%6Detrics",
            "/api/../metrics",
            "/stub_status",
            "/nginx_status",
        ):
            response = http.get(path)
            assert response.status_code == 404, path
            assert b"sluice_" not in response.content and b"Active connections" not in (
                response.content
            )
        for port in internal_ports:
            response = http.get("/metrics", headers={"Host": f"127.0.0.1:{port}"})
            assert response.status_code == 404
    port = edge_stack.port_base
    for internal in internal_ports:
        absolute = _raw(
            port,
            f"GET http://127.0.0.1:{internal}/metrics HTTP/1.1\r\n{CLOSE_HEADERS}".encode(),
        )
        assert absolute.startswith(b"HTTP/1.1 404"), absolute[:200]
        connect = _raw(
            port,
            f"CONNECT 127.0.0.1:{internal} HTTP/1.1\r\n{CLOSE_HEADERS}".encode(),
        )
        assert connect.split(b" ")[1].startswith(b"4"), connect[:200]
    # ...and every internal listener is bound to loopback only.
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True)
    for internal in internal_ports:
        addresses = [
            line.split()[3]
            for line in listening.stdout.splitlines()
            if line.split()[3].endswith(f":{internal}")
        ]
        assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses


def test_security_headers_and_no_version_on_every_kind_of_answer(edge_stack: RunningStack) -> None:
    _, token = new_user(edge_stack.url)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=edge_stack.url, timeout=10) as http:
        answers = {
            "app 200": http.get("/api/v1/users/me", headers=auth),
            "app 401": http.get("/api/v1/users/me"),
            "app 404": http.get("/api/v1/items/00000000-0000-0000-0000-000000000000", headers=auth),
            "app 422": http.post("/api/v1/items/", content="{", headers=auth),
            "nginx 404": http.get("/metrics"),
            "nginx 413": http.post("/api/v1/items/", content=b"x" * 100_000, headers=auth),
            "nginx 400": http.get("/healthz", headers={"X-Big": "a" * 16_000}),
        }
        # Cheap login attempts (no password check) beyond the login burst.
        limited = [http.post("/api/v1/login/access-token") for _ in range(30)]
        answers["nginx 429"] = next(r for r in limited if r.status_code == 429)
    for name, response in answers.items():
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, (name, header, response.headers)
        server = response.headers.get("server", "")
        assert not any(ch.isdigit() for ch in server), (name, server)
        assert "uvicorn" not in server.lower() and "x-powered-by" not in response.headers
        text = response.text.lower()
        assert "nginx/" not in text, (name, response.text[:200])
        if response.status_code >= 400:
            assert not any(marker in text for marker in LEAK_MARKERS), (name, response.text)
            assert response.headers["content-type"].startswith("application/json"), name
