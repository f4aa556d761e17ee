"""Publish a benchmark's plots and summary into a committed directory, with their provenance.

    python -m bench.publish bench/results/<timestamp> [docs/bench]
    python -m bench ... --publish docs/bench          # the same, right after the run

Copies `goodput.png`, `p99.png` and `summary.md` and writes `ABOUT.md` beside
them: the command that produced them, the commit it ran on (`git rev-parse
HEAD`, and whether the checkout had uncommitted changes), the date and the
results directory. The provenance is the run's own (recorded in
results.json when it started), not the publisher's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "docs" / "bench"
PUBLISHED = ("goodput.png", "p99.png", "summary.md")


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def provenance(command: Sequence[str]) -> dict[str, str]:
    """What a published figure must say about where it came from."""
    commit = _git("rev-parse", "HEAD") or "unknown"
    changed = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": shlex.join(command) if command else "python -m bench",
        "commit": commit,
        "dirty": "yes" if changed else "no",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def about(record: dict[str, str], *, source: str) -> str:
    """ABOUT.md: the provenance of the published files. Pure."""
    dirty = (
        " (**with uncommitted changes**: the figures are not exactly that commit's)"
        if record.get("dirty") == "yes"
        else ""
    )
    return "\n".join(
        [
            "# Where these figures come from",
            "",
            f"- command: `{record.get('command', '?')}`",
            f"- commit: `{record.get('commit', '?')}`{dirty}",
            f"- date: {record.get('date', '?')}",
            f"- results: `{source}` (report.md and results.json there, not committed)",
            "",
            "Files: " + ", ".join(f"[{name}]({name})" for name in PUBLISHED) + ".",
            "How to read them: [docs/benchmark.md](../benchmark.md).",
            "",
        ]
    )


def publish(results: Path, target: Path) -> list[Path]:
    """Copy a results directory's plots and summary to `target`, with ABOUT.md."""
    data = json.loads((results / "results.json").read_text())
    missing = [name for name in PUBLISHED if not (results / name).exists()]
    if missing:
        raise FileNotFoundError(f"{results} has no {', '.join(missing)}: nothing to publish")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PUBLISHED:
        written.append(Path(shutil.copy2(results / name, target / name)))
    record = {key: str(value) for key, value in (data.get("provenance") or {}).items()}
    try:
        source = str(results.resolve().relative_to(ROOT))
    except ValueError:
        source = str(results)
    (target / "ABOUT.md").write_text(about(record, source=source))
    return [*written, target / "ABOUT.md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__)
    parser.add_argument("results", type=Path, help="a results directory of python -m bench")
    parser.add_argument("target", type=Path, nargs="?", default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    for path in publish(args.results, args.target):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
