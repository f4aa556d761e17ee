"""Fixtures for the deployment-file checks: no stack, no Docker engine, no cluster."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest
from dotenv import set_key

from tests.config import deployment


@pytest.fixture(scope="session")
def staging_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A filled-in copy of .env.example with throwaway secrets, written once per session."""
    filled = {
        "SLUICE_SECRET_KEY": secrets.token_urlsafe(48),
        "SLUICE_DB_PASSWORD": secrets.token_urlsafe(24),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        "PGBOUNCER_STATS_PASSWORD": secrets.token_urlsafe(24),
        "POSTGRES_MONITOR_PASSWORD": secrets.token_urlsafe(24),
        "SLUICE_RUNBOOK_URL": "https://git.example.com/sluice/blob/main/docs/observability.md",
        "FIRST_SUPERUSER_PASSWORD": secrets.token_urlsafe(18),
    }
    path = tmp_path_factory.mktemp("staging") / ".env"
    shutil.copyfile(deployment.ROOT / ".env.example", path)
    for key, value in filled.items():
        set_key(path, key, value, quote_mode="never")
    return path


@pytest.fixture(scope="session")
def compose_model(staging_env_file: Path) -> dict[str, Any]:
    """`docker compose config --format json` of docker-compose.prod.yml, computed once.

    Tests that mutate it must deep-copy it first.
    """
    return deployment.resolved_compose(staging_env_file)


@pytest.fixture(scope="session")
def template_dirs() -> list[Path]:
    """The template directories the local-stack launcher renders."""
    dirs = deployment.local_stack_template_dirs()
    assert dirs, "deploy.environment.render_configs rendered nothing"
    return dirs
