"""The stack's own PostgreSQL cluster: its directory, initdb, role and database.

As root, PostgreSQL and PgBouncer run as the postgres user, which usually
cannot reach the checkout (a clone in root's 0700 home): what they read and
write lives in a database directory under /var/lib/sluice named from a hash
of the state directory's path (`Layout.db_dir`), 0700 and the postgres
user's; everything else, logs included, stays in the state directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from deploy.binaries import DB_SERVICE_USER, as_db_user, binary
from deploy.errors import StackError, tail
from deploy.layout import DB_ROOT, ROOT, Layout, switches_user

# Creates the app's role and database; the postgres image runs it too.
ROLE_SCRIPT = ROOT / "deploy" / "postgres-init" / "10-sluice-role.sh"


def prepare_db_dir(layout: Layout) -> None:
    """Create the database directory: under DB_ROOT, 0700 and the postgres user's, as root."""
    if layout.db_dir == layout.state:
        layout.pgsocket.mkdir(exist_ok=True)
        return
    user = _db_user()
    try:
        DB_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        info = DB_ROOT.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
            raise StackError(f"{DB_ROOT} is not a directory owned by root: remove it")
        DB_ROOT.chmod(0o755)  # the postgres user passes through it
        layout.db_dir.mkdir(mode=0o700, exist_ok=True)
        info = layout.db_dir.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (0, user.pw_uid):
            raise StackError(f"{layout.db_dir} is not a directory of root or {user.pw_name}")
        os.chown(layout.db_dir, user.pw_uid, user.pw_gid)
        layout.db_dir.chmod(0o700)
        # Which state directory it belongs to, for people and for `clean --all`.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        fd = os.open(layout.db_dir / "state-dir", flags, 0o644)
        with os.fdopen(fd, "w") as marker:
            marker.write(f"{layout.state}\n")
        _adopt_older_layout(layout)
        layout.pgsocket.mkdir(exist_ok=True)
        _chown_to_db_user(layout.pgsocket)
    except OSError as exc:
        raise StackError(f"cannot prepare the database directory {layout.db_dir}: {exc}") from exc


def init_cluster(layout: Layout) -> None:
    """initdb into `layout.pgdata` unless a cluster is there already."""
    # Their logs are the launcher's files (stdout/stderr), so only the
    # database directory needs to be theirs.
    if switches_user():
        _chown_to_db_user(layout.db_rendered)
    if (layout.pgdata / "PG_VERSION").exists():
        return
    layout.pgdata.mkdir(mode=0o700, exist_ok=True)
    if switches_user():
        _chown_to_db_user(layout.pgdata)
    argv = [
        binary("initdb"),
        "-D",
        str(layout.pgdata),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--no-instructions",
    ]
    with open(layout.log("initdb"), "a") as log:
        result = subprocess.run(
            as_db_user(argv),
            check=False,
            cwd=layout.db_dir,  # the postgres user may not enter the checkout
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise StackError(
            f"initdb failed (status {result.returncode}):\n"
            f"--- last lines of {layout.log('initdb')} ---\n{tail(layout.log('initdb'))}"
        )


def wait_accepting(layout: Layout, *, timeout_s: float) -> None:
    """Until PostgreSQL accepts connections: its port opens before recovery ends.

    pg_isready's -t bounds one attempt; it answers 1 at once while the server
    is still starting up ("rejecting connections"), so it is asked again.
    """
    command = [binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(layout.ports["postgres"])]
    deadline = time.monotonic() + timeout_s
    while True:
        code = subprocess.run([*command, "-t", "5"]).returncode
        if code == 0:
            return
        if code == 3 or time.monotonic() > deadline:  # 3: pg_isready's arguments are wrong
            raise subprocess.CalledProcessError(code, command)
        time.sleep(0.1)


def ensure_database(layout: Layout, env: Mapping[str, str]) -> None:
    """The app's role and database, by the script the postgres image runs on a new volume."""
    psql_dir = str(Path(binary("psql")).parent)
    script_env = {
        **env,
        "PATH": f"{psql_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(layout.ports["postgres"]),
        "POSTGRES_USER": "postgres",
    }
    result = subprocess.run(
        [str(ROLE_SCRIPT)], env=script_env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise StackError(f"{ROLE_SCRIPT.name} failed: {result.stderr.strip()}")


def postmaster(pgdata: Path) -> psutil.Process | None:
    """The PostgreSQL server running on `pgdata`, if one is."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        proc = psutil.Process(pid)
        if "postgres" in proc.name():
            return proc
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    return None


def _db_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(DB_SERVICE_USER)
    except KeyError:
        raise StackError(
            f"no {DB_SERVICE_USER} user: run `make packages` (installs postgresql)"
        ) from None


def _chown_to_db_user(top: Path) -> None:
    user = _db_user()
    for path in [top, *top.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


def _adopt_older_layout(layout: Layout) -> None:
    """A cluster an older launcher made in the state directory moves to db_dir."""
    old = layout.state / "pgdata"
    if (old / "PG_VERSION").exists() and not layout.pgdata.exists() and not postmaster(old):
        shutil.move(old, layout.pgdata)
        _chown_to_db_user(layout.pgdata)
    for stale in ("pgsocket", "config/postgres", "config/pgbouncer"):  # now in db_dir
        shutil.rmtree(layout.state / stale, ignore_errors=True)
