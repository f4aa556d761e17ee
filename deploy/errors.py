"""The local stack's one error: something an operator must fix, said plainly."""

from __future__ import annotations

from pathlib import Path


class StackError(RuntimeError):
    """The stack cannot start or stop; the message says what to do next."""


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
