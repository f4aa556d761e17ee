"""`python -m deploy up|down|status|clean [--all]`: the local stack's commands (make up, ...)."""

from __future__ import annotations

import argparse
import sys

from deploy import commands
from deploy.errors import StackError
from deploy.layout import layout_from_env
from deploy.supervisor import supervise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=commands.__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "clean", "supervise"])
    parser.add_argument("--ready-fd", type=int, help="supervise: where to say READY or FAILED")
    parser.add_argument(
        "--all", action="store_true", help="clean: also every .sluice* stack of this checkout"
    )
    args = parser.parse_args(argv)
    layout = layout_from_env()
    try:
        if args.command == "supervise":
            return supervise(layout, args.ready_fd)
        if args.command == "clean":
            return commands.clean(layout, everything=args.all)
        return {"up": commands.up, "down": commands.down, "status": commands.status}[args.command](
            layout
        )
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
