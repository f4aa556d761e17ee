"""The compose deployment's database authentication, run for real: SCRAM, not trust.

No Docker engine here, so the test does what the postgres image's entrypoint
and the `config` service do, with the values `docker compose config` resolves:
initdb with POSTGRES_INITDB_ARGS and the password, PostgreSQL with the rendered
postgresql.conf, PgBouncer with the rendered pgbouncer.ini and userlist.txt.
Then a client gets in only with the right password, through PgBouncer and
directly, and the stored verifier is SCRAM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from mirakuru import TCPExecutor

from deploy import stack
from tests.config import deployment
from tests.config.deployment import ROOT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def state() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is private to root, and PostgreSQL
    # runs as the postgres user.
    path = Path(tempfile.mkdtemp(prefix="sluice-compose-auth-"))
    if os.geteuid() == 0:
        shutil.chown(path, stack.DB_SERVICE_USER)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start(argv: list[str], port: int, log: Path) -> TCPExecutor:
    with log.open("ab") as out:  # the child keeps its own descriptor
        executor = TCPExecutor(
            stack._as_db_user(argv),
            host="127.0.0.1",
            port=port,
            timeout=60,
            stop_signal=signal.SIGINT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        executor.start()
    return executor


def _connect(port: int, user: str, password: str, dbname: str) -> Any:
    return psycopg2.connect(
        host="127.0.0.1", port=port, user=user, password=password, dbname=dbname, connect_timeout=5
    )


def test_postgres_and_pgbouncer_accept_only_the_password_over_scram(
    compose_model: dict[str, Any], state: Path
) -> None:
    services = compose_model["services"]
    pg_env = services["postgres"]["environment"]
    config_env = services["config"]["environment"]
    assert "POSTGRES_HOST_AUTH_METHOD" not in pg_env, "the image would write a trust rule"
    assert config_env["PGBOUNCER_AUTH_TYPE"] == "scram-sha-256"
    user, password, dbname = (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        pg_env["POSTGRES_DB"],
    )
    assert (config_env["SLUICE_DB_USER"], config_env["SLUICE_DB_PASSWORD"]) == (user, password)

    pg_port, bouncer_port = _free_port(), _free_port()
    pgdata, sockets, rendered = state / "pgdata", state / "sockets", state / "config"
    for path in (sockets, rendered / "postgres", rendered / "pgbouncer"):
        path.mkdir(parents=True)
    pwfile = state / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        for path in (pwfile, sockets, rendered):
            shutil.chown(path, stack.DB_SERVICE_USER)
    # What docker-entrypoint.sh runs on an empty volume.
    subprocess.run(
        stack._as_db_user(
            [
                stack._binary("initdb"),
                "-D",
                str(pgdata),
                f"--username={user}",
                f"--pwfile={pwfile}",
                "--no-instructions",
                *pg_env["POSTGRES_INITDB_ARGS"].split(),
            ]
        ),
        check=True,
        capture_output=True,
    )
    local = {
        "POSTGRES_LISTEN_ADDRESSES": "127.0.0.1",
        "POSTGRES_PORT": str(pg_port),
        "POSTGRES_SOCKET_DIR": str(sockets),
        "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
        "PGBOUNCER_LISTEN_PORT": str(bouncer_port),
        "PGBOUNCER_SERVER_HOST": "127.0.0.1",
        "PGBOUNCER_SERVER_PORT": str(pg_port),
        "PGBOUNCER_CONFIG_DIR": str(rendered / "pgbouncer"),
    }
    env = {**config_env, **local}
    for name in ("postgres", "pgbouncer"):
        template_dir = ROOT / "deploy" / name
        assert deployment.render(template_dir, rendered / name, env) == ""
    if os.geteuid() == 0:
        for path in rendered.rglob("*"):
            shutil.chown(path, stack.DB_SERVICE_USER)
    conf = rendered / "postgres" / "postgresql.conf"
    logs = state / "logs"
    logs.mkdir()
    postgres = _start(
        [
            stack._binary("postgres"),
            "-D",
            str(pgdata),
            f"-cconfig_file={conf}",
            f"-chba_file={pgdata / 'pg_hba.conf'}",
        ],
        pg_port,
        logs / "postgres.log",
    )
    bouncer = None
    try:
        conn = _connect(pg_port, user, password, "postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{dbname}"')
                cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (user,))
                verifier = cur.fetchone()[0]
        finally:
            conn.close()
        assert verifier.startswith("SCRAM-SHA-256$")
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            _connect(pg_port, user, password + "x", dbname)

        bouncer = _start(
            [stack._binary("pgbouncer"), str(rendered / "pgbouncer" / "pgbouncer.ini")],
            bouncer_port,
            logs / "pgbouncer.log",
        )
        conn = _connect(bouncer_port, user, password, dbname)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_user, current_database()")
                assert cur.fetchone() == (user, dbname)
        finally:
            conn.close()
        # PgBouncer checks the SCRAM proof itself: "SASL authentication failed".
        with pytest.raises(psycopg2.OperationalError, match="authentication failed"):
            _connect(bouncer_port, user, password + "x", dbname)
    finally:
        if bouncer is not None:
            bouncer.stop()
        postgres.stop()
