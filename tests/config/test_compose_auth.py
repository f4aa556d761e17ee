"""The compose deployment's database roles and authentication, run for real: SCRAM, not trust.

No Docker engine here, so the test does what the postgres image's entrypoint
and the `config` service do, with the values `docker compose config` resolves:
initdb with POSTGRES_INITDB_ARGS and the superuser's password, the init
scripts compose mounts, PostgreSQL with the rendered postgresql.conf, PgBouncer
with the rendered pgbouncer.ini and userlist.txt. Then a client gets in only with the right
password, through PgBouncer and directly; the stored verifiers are SCRAM;
the app's role owns its database without being a superuser; and on PgBouncer's
admin console the app's user is refused every admin command while the
exporter's stats user (a userlist entry, no PostgreSQL role) can only SHOW.
The exporters' credentials, rendered by `config` from deploy/*-exporter/,
log in: postgres_exporter (Debian's build of the image's program) with its
user and password files as the monitoring role (pg_monitor, owns nothing),
and the stats user with its pgpass file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from mirakuru import HTTPExecutor, TCPExecutor

from deploy.binaries import DB_SERVICE_USER, as_db_user, binary
from tests.config import deployment
from tests.config.deployment import ROOT
from tests.pgbouncer_console import ADMIN_COMMANDS, refused_admin_commands, show_pools
from tests.ports import free_port


@pytest.fixture
def state() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is private to root, and PostgreSQL
    # runs as the postgres user.
    path = Path(tempfile.mkdtemp(prefix="sluice-compose-auth-"))
    if os.geteuid() == 0:
        shutil.chown(path, DB_SERVICE_USER)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start(argv: list[str], port: int, log: Path) -> TCPExecutor:
    with log.open("ab") as out:  # the child keeps its own descriptor
        executor = TCPExecutor(
            as_db_user(argv),
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


def _init_scripts(postgres_service: dict[str, Any]) -> list[Path]:
    """The scripts compose mounts where the image's entrypoint runs them."""
    for volume in postgres_service["volumes"]:
        if volume["target"] == "/docker-entrypoint-initdb.d":
            return sorted(Path(volume["source"]).glob("*.sh"))
    raise AssertionError("nothing mounted at /docker-entrypoint-initdb.d")


def _query(conn: Any, sql: str, *args: object) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def test_scram_only_and_the_app_role_is_not_a_superuser(
    compose_model: dict[str, Any], state: Path
) -> None:
    services = compose_model["services"]
    pg_env = services["postgres"]["environment"]
    config_env = services["config"]["environment"]
    assert "POSTGRES_HOST_AUTH_METHOD" not in pg_env, "the image would write a trust rule"
    assert config_env["PGBOUNCER_AUTH_TYPE"] == "scram-sha-256"
    admin, admin_password = pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"]
    app, password, dbname = (
        config_env["SLUICE_DB_USER"],
        config_env["SLUICE_DB_PASSWORD"],
        config_env["SLUICE_DB_NAME"],
    )
    assert app != admin and password != admin_password
    scripts = _init_scripts(services["postgres"])
    assert [p.name for p in scripts] == ["10-sluice-role.sh"]

    pg_port, bouncer_port = free_port(), free_port()
    pgdata, sockets, rendered = state / "pgdata", state / "sockets", state / "config"
    for path in (sockets, rendered / "postgres", rendered / "pgbouncer"):
        path.mkdir(parents=True)
    pwfile = state / "pwfile"
    pwfile.write_text(admin_password + "\n")
    if os.geteuid() == 0:
        for path in (pwfile, sockets, rendered):
            shutil.chown(path, DB_SERVICE_USER)
    # What docker-entrypoint.sh does on an empty volume: initdb, then the
    # init scripts against the new cluster, then the server proper.
    subprocess.run(
        as_db_user(
            [
                binary("initdb"),
                "-D",
                str(pgdata),
                f"--username={admin}",
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
    for name in ("postgres", "pgbouncer", "postgres-exporter", "pgbouncer-exporter"):
        template_dir = ROOT / "deploy" / name
        assert deployment.render(template_dir, rendered / name, env) == ""
    if os.geteuid() == 0:
        for path in rendered.rglob("*"):
            shutil.chown(path, DB_SERVICE_USER)
    conf = rendered / "postgres" / "postgresql.conf"
    logs = state / "logs"
    logs.mkdir()
    postgres = _start(
        [
            binary("postgres"),
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
        script_env = {
            **pg_env,
            "PATH": f"{Path(binary('psql')).parent}:{os.environ['PATH']}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(pg_port),
            "PGPASSWORD": admin_password,  # the entrypoint exports it too
        }
        for _ in range(2):  # a second run (a restarted init) changes nothing
            for script in scripts:
                result = subprocess.run(
                    [str(script)], env=script_env, capture_output=True, text=True, check=False
                )
                assert result.returncode == 0, result.stderr

        conn = _connect(pg_port, app, password, dbname)
        try:
            conn.autocommit = True
            role = _query(
                conn,
                "SELECT rolsuper, rolcreaterole, rolcreatedb,"
                " pg_has_role(%s, 'pg_monitor', 'MEMBER')"
                " FROM pg_roles WHERE rolname = current_user",
                app,
            )
            assert role == (False, False, False, False), "the app needs no pg_monitor"
            owner = _query(
                conn,
                "SELECT pg_get_userbyid(datdba) FROM pg_database"
                " WHERE datname = current_database()",
            )
            assert owner == (app,)
            # What the migrations need: tables in its own database.
            _query(conn, "CREATE TABLE probe (id int) ; SELECT 1")
            _query(conn, "DROP TABLE probe ; SELECT 1")
        finally:
            conn.close()
        admin_conn = _connect(pg_port, admin, admin_password, "postgres")
        try:
            verifiers = _query(
                admin_conn,
                "SELECT bool_and(rolpassword LIKE 'SCRAM-SHA-256$%%') FROM pg_authid"
                " WHERE rolname IN (%s, %s)",
                admin,
                app,
            )
            assert verifiers == (True,)
        finally:
            admin_conn.close()
        for user in (app, admin):
            with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
                _connect(pg_port, user, password + "x", dbname)

        bouncer = _start(
            [binary("pgbouncer"), str(rendered / "pgbouncer" / "pgbouncer.ini")],
            bouncer_port,
            logs / "pgbouncer.log",
        )
        conn = _connect(bouncer_port, app, password, dbname)
        try:
            assert _query(conn, "SELECT current_user, current_database()") == (app, dbname)
        finally:
            conn.close()
        # PgBouncer checks the SCRAM proof itself: "SASL authentication failed".
        with pytest.raises(psycopg2.OperationalError, match="authentication failed"):
            _connect(bouncer_port, app, password + "x", dbname)
        # Nobody administers PgBouncer over the network, least of all the app
        # (checked first: it needs nothing but the app's own credentials).
        refused = refused_admin_commands(bouncer_port, app, password)
        assert set(refused) == set(ADMIN_COMMANDS), (app, refused)
        # The exporter's stats user may only look, and is nobody in PostgreSQL.
        stats_user, stats_password = (
            config_env["PGBOUNCER_STATS_USER"],
            config_env["PGBOUNCER_STATS_PASSWORD"],
        )
        assert stats_user not in (app, admin) and stats_password not in (password, admin_password)
        refused = refused_admin_commands(bouncer_port, stats_user, stats_password)
        assert set(refused) == set(ADMIN_COMMANDS), (stats_user, refused)
        assert all("admin access needed" in m for m in refused.values()), refused
        assert show_pools(bouncer_port, stats_user, stats_password)
        with pytest.raises(psycopg2.OperationalError, match="authentication failed"):
            show_pools(bouncer_port, stats_user, stats_password + "x")
        # Through PgBouncer to the real database, PostgreSQL refuses it: no such role.
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            _connect(bouncer_port, stats_user, stats_password, dbname).close()
        admin_conn = _connect(pg_port, admin, admin_password, "postgres")
        try:
            no_role = _query(
                admin_conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s", stats_user
            )
            assert no_role == (0,)
        finally:
            admin_conn.close()
        conn = _connect(bouncer_port, app, password, dbname)
        try:
            assert _query(conn, "SELECT 1") == (1,), "PgBouncer stopped serving"
        finally:
            conn.close()
        _check_exporter_credentials(
            services, rendered, pg_port, bouncer_port, admin, admin_password, state
        )
    finally:
        if bouncer is not None:
            bouncer.stop()
        postgres.stop()


def _check_exporter_credentials(
    services: dict[str, Any],
    rendered: Path,
    pg_port: int,
    bouncer_port: int,
    admin: str,
    admin_password: str,
    state: Path,
) -> None:
    """The files `config` renders for the exporters log them in, and only as themselves."""
    monitor = (rendered / "postgres-exporter" / "user").read_text().strip()
    assert monitor == services["postgres"]["environment"]["POSTGRES_MONITOR_USER"]
    assert monitor != services["config"]["environment"]["SLUICE_DB_USER"]
    admin_conn = _connect(pg_port, admin, admin_password, "postgres")
    try:
        attributes = _query(
            admin_conn,
            "SELECT rolsuper, rolcreaterole, rolcreatedb, pg_has_role(%s, 'pg_monitor', 'MEMBER'),"
            " (SELECT count(*) FROM pg_database WHERE datdba = r.oid),"
            " rolpassword LIKE 'SCRAM-SHA-256$%%'"
            " FROM pg_authid r WHERE rolname = %s",
            monitor,
            monitor,
        )
        assert attributes == (False, False, False, True, 0, True), attributes
    finally:
        admin_conn.close()

    exporter = services["postgres-exporter"]["environment"]
    uri = exporter["DATA_SOURCE_URI"].replace("postgres:5432", f"127.0.0.1:{pg_port}")
    files = {
        "DATA_SOURCE_USER_FILE": rendered / "postgres-exporter" / "user",
        "DATA_SOURCE_PASS_FILE": rendered / "postgres-exporter" / "password",
    }
    assert {k: Path(exporter[k]).name for k in files} == {k: p.name for k, p in files.items()}
    assert _postgres_exporter_up(uri, files, state) == 1
    wrong = state / "wrong-password"
    wrong.write_text("not-the-password\n")
    assert _postgres_exporter_up(uri, {**files, "DATA_SOURCE_PASS_FILE": wrong}, state) == 0

    pgpass = rendered / "pgbouncer-exporter" / "pgpass"
    assert oct(pgpass.stat().st_mode & 0o777) == oct(0o600)
    stats_user = services["config"]["environment"]["PGBOUNCER_STATS_USER"]
    conn = psycopg2.connect(
        host="127.0.0.1",
        port=bouncer_port,
        user=stats_user,
        dbname="pgbouncer",
        passfile=str(pgpass),
        connect_timeout=5,
    )
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SHOW POOLS")
            assert cur.fetchall()
    finally:
        conn.close()


def _postgres_exporter_up(uri: str, files: dict[str, Path], state: Path) -> int:
    """pg_up of a postgres_exporter started with these credential files."""
    port = free_port()
    log = state / f"postgres-exporter-{port}.log"
    with log.open("ab") as out:
        exporter = HTTPExecutor(
            [binary("prometheus-postgres-exporter"), f"--web.listen-address=127.0.0.1:{port}"],
            url=f"http://127.0.0.1:{port}/metrics",
            method="GET",
            timeout=30,
            envvars={"DATA_SOURCE_URI": uri, **{k: str(v) for k, v in files.items()}},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        exporter.start()
    try:
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        exporter.stop()
    (up,) = [line for line in metrics.splitlines() if line.startswith("pg_up ")]
    return int(float(up.split()[1]))
