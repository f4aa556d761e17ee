"""The host binaries the local stack runs, and how PostgreSQL's user runs them."""

from __future__ import annotations

import shutil
from pathlib import Path

from deploy.errors import StackError
from deploy.layout import switches_user

# Binary -> the Debian package `make packages` installs it from.
REQUIRED_BINARIES = {
    "initdb": "postgresql",
    "postgres": "postgresql",
    "pgbouncer": "pgbouncer",
    "nginx": "nginx-light",
    "envsubst": "gettext-base",
    "prometheus": "prometheus",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "prometheus-nginx-exporter": "prometheus-nginx-exporter",
    "mtail": "mtail",
    "prometheus-alertmanager": "prometheus-alertmanager",
}
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
DB_SERVICE_USER = "postgres"


def binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(d / name) for d in PG_BIN_DIRS if (d / name).exists()), None
    )
    if found is None:
        package = REQUIRED_BINARIES.get(name, name)
        raise StackError(f"{name} not found: run `make packages` (installs {package})")
    return found


def as_db_user(argv: list[str]) -> list[str]:
    """PostgreSQL and PgBouncer refuse to run as root: drop to the postgres user."""
    if not switches_user():
        return argv
    return [
        binary("setpriv"),
        f"--reuid={DB_SERVICE_USER}",
        f"--regid={DB_SERVICE_USER}",
        "--init-groups",
        *argv,
    ]
