"""An inconsistent configuration is refused before anything starts; `make up` starts anywhere."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from deploy.envfile import read_env_file
from deploy.layout import Layout
from tests.stackctl import PORT_SHIFT, ROOT, clean_environ, launcher, run_gunicorn


def test_launcher_refuses_inconsistent_limits() -> None:
    env = dict(
        os.environ,
        SLUICE_STATE_DIR=str(ROOT / ".sluice-test-refused"),
        SLUICE_PORT_BASE="24600",
        SLUICE_WORKERS="2",
        SLUICE_DB_MAX_OVERFLOW="50",
    )
    result = launcher("up", env)
    assert result.returncode != 0
    assert "db_max_overflow 50" in result.stderr and "max_client_conn" in result.stderr, (
        result.stderr
    )
    status = launcher("status", env)
    assert "not running" in status.stdout


def test_gunicorn_refuses_inconsistent_limits() -> None:
    env = dict(
        os.environ, SLUICE_WORKERS="2", SLUICE_DB_MAX_OVERFLOW="50", SLUICE_BIND_PORT="24690"
    )
    result = run_gunicorn(env)
    assert result.returncode != 0
    assert "exceeds PgBouncer max_client_conn" in result.stderr


def _copy_working_tree(target: Path) -> None:
    """The checkout as it is now (tracked and new files), mtimes kept so make sees no change."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.exists() or source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_make_up_works_from_a_clone_postgres_cannot_reach() -> None:
    """`make up` in a clone under a 0700 root-owned directory (root's home): up, down, clean."""
    private = Path(tempfile.mkdtemp(prefix="sluice-private-"))  # mode 0700, owned by root
    clone = private / "sluice"
    state = clone / ".sluice"
    db_dir = Layout(state=state.resolve(), port_base=0).db_dir
    venv = Path(sys.prefix)
    # This venv, not a new one: `-o` keeps make from reinstalling into it.
    make = ["make", f"VENV={venv}", f"PY={sys.executable}", "-o", f"{venv}/.installed"]
    env = {
        key: value
        for key, value in clean_environ().items()
        if not key.startswith(("MAKE", "MFLAGS"))
    }
    env["SLUICE_PORT_BASE"] = str(24650 + PORT_SHIFT)

    def run(*target: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*make, *target], cwd=clone, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"make {target}:\n{result.stdout}\n{result.stderr}"
        return result

    started: list[psutil.Process] = []
    try:
        _copy_working_tree(clone)
        up = run("up")
        assert f"{'database files':30} {db_dir}" in up.stdout, up.stdout
        info = db_dir.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (pwd.getpwnam("postgres").pw_uid, 0o700)
        values = read_env_file(state / "stack.env")
        for key, value in values.items():
            if key.startswith("SLUICE_PID_") or key == "SLUICE_SUPERVISOR_PID":
                started += _tree(int(value))
        assert any(proc.name() == "postgres" for proc in started)
        assert httpx.get(f"{values['SLUICE_URL']}/healthz", timeout=10).status_code == 200
        email = f"clone-{uuid.uuid4().hex[:12]}@example.com"
        signup = httpx.post(
            f"{values['SLUICE_URL']}/api/v1/users/signup",
            json={"email": email, "password": "correct-horse-9"},
            timeout=10,
        )
        assert signup.status_code == 201, signup.text
        assert "database system is ready" in (state / "logs" / "postgres.log").read_text()
        assert str(db_dir) in run("status").stdout

        down = run("down")
        assert str(db_dir) in down.stdout
        assert (db_dir / "pgdata" / "PG_VERSION").exists(), "down keeps the database"

        run("clean")
        assert not db_dir.exists() and not state.exists()
        assert not [proc for proc in started if _alive(proc)]
        mentions = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if (str(clone) in cmdline or str(db_dir) in cmdline) and _alive(proc):
                mentions.append((proc.pid, cmdline))
        assert not mentions
    finally:
        if clone.exists():  # a failure above: stop and remove what it left, by recorded PID
            subprocess.run(
                [sys.executable, "-m", "deploy", "clean"],
                cwd=clone,
                env=env,
                capture_output=True,
                timeout=300,
                check=False,
            )
        shutil.rmtree(private, ignore_errors=True)
