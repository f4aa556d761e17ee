"""Where a local stack lives: its state directory, database directory and ports.

PORTS is the one table of port offsets: every port of a stack is
`SLUICE_PORT_BASE + PORTS[name]`, read through `Layout.ports`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT_BASE = 24100
PORTS = {
    "nginx": 0,
    "nginx_status": 1,
    "gunicorn": 2,
    "metrics": 3,
    "pgbouncer": 4,
    "postgres": 5,
    "prometheus": 6,
    "postgres_exporter": 7,
    "pgbouncer_exporter": 8,
    "nginx_exporter": 9,
    "nginx_log_exporter": 10,
    "probes": 11,
    "alertmanager": 12,
    "alert_receiver": 13,
    "smtp": 14,
}
# As root, the postgres user's files live here (one directory per state directory).
DB_ROOT = Path("/var/lib/sluice")


def switches_user() -> bool:
    """PostgreSQL and PgBouncer refuse to run as root: as root, they run as postgres."""
    return os.geteuid() == 0


@dataclass
class Layout:
    """Where a stack lives: its state directory and its ports."""

    state: Path
    port_base: int
    ports: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.ports = {name: self.port_base + offset for name, offset in PORTS.items()}

    @property
    def env_file(self) -> Path:
        return self.state / "stack.env"

    @property
    def supervisor_pid(self) -> Path:
        return self.state / "supervisor.pid"

    @property
    def pids_file(self) -> Path:
        return self.state / "pids"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def rendered(self) -> Path:
        return self.state / "config"

    @property
    def db_dir(self) -> Path:
        """What PostgreSQL and PgBouncer read and write: data, sockets, their configs.

        The state directory itself unless they run as another user (as root),
        who may not reach it; then a directory of its own under DB_ROOT, named
        from a hash of the state path so several stacks still coexist.
        """
        if not switches_user():
            return self.state
        digest = hashlib.sha256(str(self.state).encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9_-]+", "-", self.state.name).strip("-")[:32] or "stack"
        return DB_ROOT / f"{name}-{digest}"

    @property
    def nginx_tmp(self) -> Path:
        """nginx's temp files (request bodies it buffers to disk).

        As root, nginx's workers run as `nobody`, who may not reach the state
        directory either (a clone in a 0700 directory): then a directory beside
        db_dir, which nginx's master makes the workers' own.
        """
        if not switches_user():
            return self.state / "nginx-tmp"
        return self.db_dir.with_name(f"{self.db_dir.name}.nginx-tmp")

    @property
    def first_superuser_file(self) -> Path:
        """The local stack's first superuser and password, when the environment sets none."""
        return self.state / "first_superuser.env"

    @property
    def mail_dir(self) -> Path:
        """The local SMTP server's Maildir: every message it received is a file in new/."""
        return self.state / "mail"

    @property
    def pgdata(self) -> Path:
        return self.db_dir / "pgdata"

    @property
    def pgsocket(self) -> Path:
        return self.db_dir / "pgsocket"

    @property
    def db_rendered(self) -> Path:
        """Rendered PostgreSQL and PgBouncer configs (the others are in `rendered`)."""
        return self.db_dir / "config"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"


def layout_from_env(environ: Mapping[str, str] | None = None) -> Layout:
    environ = os.environ if environ is None else environ
    base = int(environ.get("SLUICE_PORT_BASE", DEFAULT_PORT_BASE))
    state = Path(environ.get("SLUICE_STATE_DIR", ROOT / ".sluice")).resolve()
    return Layout(state=state, port_base=base)
