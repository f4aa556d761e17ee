"""The install step brings what a minimal Debian 12 lacks (it has make, git and ca-certificates)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploy.binaries import REQUIRED_BINARIES
from tests.config import deployment

SCRIPT = deployment.ROOT / "deploy" / "install-packages.sh"

# What `make up` and `make test` run that a minimal Debian 12 (the debian:12
# image, `debootstrap --variant=minbase`) does not have, as the Debian 12
# package that brings it and the files it installs there that the setup uses.
# util-linux is essential (always there); it is listed because setpriv is used.
MINIMAL_DEBIAN_LACKS = {
    "python3": ["/usr/bin/python3"],
    "python3-venv": ["/usr/lib/python3.11/ensurepip/__init__.py"],  # python3 -m venv
    "postgresql": [
        "/usr/lib/postgresql/15/bin/postgres",
        "/usr/lib/postgresql/15/bin/initdb",
        "/usr/lib/postgresql/15/bin/psql",
        "/usr/lib/postgresql/15/bin/pg_isready",
    ],
    "pgbouncer": ["/usr/sbin/pgbouncer"],
    "nginx-light": ["/usr/sbin/nginx"],
    # njs (nginx/njs/sluice.js): per-client limits on verified token subjects.
    "libnginx-mod-http-js": ["/usr/lib/nginx/modules/ngx_http_js_module.so"],
    "gettext-base": ["/usr/bin/envsubst"],
    "prometheus": ["/usr/bin/prometheus", "/usr/bin/promtool"],
    "prometheus-postgres-exporter": ["/usr/bin/prometheus-postgres-exporter"],
    "prometheus-nginx-exporter": ["/usr/bin/prometheus-nginx-exporter"],
    "mtail": ["/usr/bin/mtail"],
    "prometheus-alertmanager": ["/usr/bin/prometheus-alertmanager"],
    "util-linux": ["/usr/bin/setpriv"],
    "iproute2": ["/usr/bin/ss"],  # tests/reliability: listeners on loopback only
    "curl": ["/usr/bin/curl"],  # the README's first example
}


def _missing(root: Path) -> set[str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--check", "--root", str(root)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return set(result.stdout.split())


def _root_with(root: Path, packages: set[str]) -> Path:
    for package in packages:
        for name in MINIMAL_DEBIAN_LACKS[package]:
            path = root / name.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    return root


def test_on_a_minimal_debian_the_check_finds_every_missing_package(tmp_path: Path) -> None:
    assert _missing(tmp_path) == set(MINIMAL_DEBIAN_LACKS)


def test_each_package_is_found_missing_by_its_own_files(tmp_path: Path) -> None:
    everything = set(MINIMAL_DEBIAN_LACKS)
    assert _missing(_root_with(tmp_path / "all", everything)) == set()
    for package in sorted(everything):
        root = _root_with(tmp_path / package, everything - {package})
        assert _missing(root) == {package}, package


def test_every_host_binary_the_launcher_runs_is_on_the_list() -> None:
    listed = {Path(name).name for names in MINIMAL_DEBIAN_LACKS.values() for name in names}
    assert set(REQUIRED_BINARIES) - listed == set()


def test_the_listed_files_are_where_debian_12_puts_them() -> None:
    """On this Debian 12 machine (after `make install`) every listed file is there."""
    release = dict(
        line.split("=", 1)
        for line in Path("/etc/os-release").read_text().splitlines()
        if "=" in line
    )
    if release.get("ID") != "debian" or release.get("VERSION_ID") != '"12"':
        pytest.skip("the list is Debian 12's")
    absent = [f for files in MINIMAL_DEBIAN_LACKS.values() for f in files if not Path(f).exists()]
    assert absent == []
    assert _missing(Path("/")) == set()
