"""nginx's security headers: declared once, in an include rendered in every shape."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from deploy import environment
from deploy.binaries import binary
from deploy.layout import Layout
from tests.config import deployment

TEMPLATES = deployment.ROOT / "nginx" / "templates"
KUSTOMIZATION = deployment.ROOT / "deploy" / "k8s" / "base" / "kustomization.yaml"
_INCLUDE = re.compile(r"^\s*include\s+([^;\s]+);", re.MULTILINE)


def _includes() -> list[str]:
    return _INCLUDE.findall((TEMPLATES / "nginx.conf.template").read_text())


def test_the_security_headers_are_declared_once() -> None:
    assert "X-Frame-Options" not in (TEMPLATES / "nginx.conf.template").read_text()
    headers = (TEMPLATES / "security-headers.conf.template").read_text()
    assert headers.count("add_header X-Frame-Options DENY always;") == 1
    assert "security-headers.conf" in _includes()


def test_the_local_render_includes_the_headers_and_nginx_accepts_it(tmp_path: Path) -> None:
    layout = Layout(state=tmp_path / "state", port_base=1000)
    for directory in (layout.logs, layout.nginx_tmp):
        directory.mkdir(parents=True)
    env = environment.stack_environment(layout, environment.without_settings(os.environ))
    out = tmp_path / "nginx"
    assert deployment.render(TEMPLATES, out, env) == ""
    assert all((out / name).is_file() for name in _includes())
    checked = subprocess.run(
        [
            binary("nginx"),
            "-t",
            "-q",
            "-e",
            str(layout.log("error")),
            "-c",
            str(out / "nginx.conf"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_compose_and_k8s_ship_every_included_template() -> None:
    """Compose mounts nginx/templates whole (test_compose); k8s lists each file."""
    generators = yaml.safe_load(KUSTOMIZATION.read_text())["configMapGenerator"]
    nginx = next(g for g in generators if g["name"] == "sluice-nginx-templates")
    shipped = {entry.split("=", 1)[0] for entry in nginx["files"]}
    assert {f"{name}.template" for name in _includes()} <= shipped
