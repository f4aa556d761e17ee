"""`make lint` fails when a declared dependency is never imported (deptry)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.config import deployment

PYPROJECT = deployment.ROOT / "pyproject.toml"


def _deptry(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [deployment.tool("deptry"), ".", "--config", str(config), "--no-ansi"],
        cwd=deployment.ROOT,  # as `make lint` runs it: the excludes are relative paths
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_every_declared_dependency_is_imported() -> None:
    result = _deptry(PYPROJECT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_declared_dependency_nothing_imports_fails_the_check(tmp_path: Path) -> None:
    text = PYPROJECT.read_text()
    declared = '    "httpx>=0.27",\n'
    assert declared in text
    config = tmp_path / "pyproject.toml"
    config.write_text(text.replace(declared, declared + '    "requests>=2.31",\n'))
    result = _deptry(config)
    assert result.returncode != 0
    assert "DEP002 'requests' defined as a dependency but not used" in result.stdout + result.stderr
