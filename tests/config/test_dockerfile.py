"""The service image: hadolint, and the properties the issue asks for."""

from __future__ import annotations

import re
import subprocess

from tests.config import deployment
from tests.config.deployment import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [deployment.tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_non_root_exec_form_with_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"(?m)^FROM\s+(\S+)", text)
    assert len(stages) >= 2, "build and runtime stages"
    assert "requirements.lock" in text
    users = re.findall(r"(?m)^USER\s+(\S+)", text)
    assert users and not users[-1].startswith(("root", "0")), "final stage runs as non-root"
    assert re.search(r"(?m)^HEALTHCHECK\s", text)
    assert re.search(r'(?m)^CMD \["gunicorn"', text), "exec form: Gunicorn is PID 1"
    # No compilers in the runtime stage.
    runtime = text.split("\nFROM ")[-1]
    assert not re.search(r"build-essential|gcc|\bmake\b", runtime)


def test_the_build_context_has_what_the_dockerfile_copies() -> None:
    """.dockerignore excludes everything by default; each COPY source is re-included."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for line in re.findall(r"(?m)^COPY\s+(?!--from)(.+)$", DOCKERFILE.read_text()):
        for source in line.split()[:-1]:
            assert source in included, f"{source} is COPYed but excluded by .dockerignore"
            assert (ROOT / source).exists(), source
