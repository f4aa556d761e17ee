"""`.env` files, read and written with python-dotenv.

Written values are single-quoted, so a file is both what `dotenv_values`
reads back and what a shell sources (`. .sluice/stack.env`); nothing is
interpolated either way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values, set_key


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE pairs of `path` (comments skipped, quotes removed, no `${}` expansion)."""
    return {
        key: value
        for key, value in dotenv_values(path, interpolate=False).items()
        if value is not None
    }


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Replace `path` atomically with `values`, each quoted."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("")
    for key, value in values.items():
        if "'" in value:  # a shell could not source dotenv's escaped form
            raise ValueError(f"{key}: a single quote cannot be written to {path.name}")
        set_key(tmp, key, value, quote_mode="always")
    os.replace(tmp, path)
