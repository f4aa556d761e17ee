"""`make up`'s supervisor: the background process that owns the stack.

`python -m deploy up` starts it in a new session (deploy/commands.py); it does
`with Stack(layout, environ=os.environ) as running`, writes
`<state>/stack.env`, answers on the ready pipe and waits for SIGTERM. It
restarts nothing: a service that exits on its own is reported once in
logs/supervisor.log, the others keep running, and `status` lists it as exited
until `down`.

The ready pipe carries one line per message, so `up`'s terminal sees the
stack come up although the supervisor has no terminal: `started <name>
<port or -> <seconds>` as each service becomes ready, then `READY`, or
`FAILED` and the error (which names the service and the last lines of its
log) up to the end of the pipe.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from deploy.envfile import write_env_file
from deploy.layout import Layout
from deploy.stack import Stack

# name, port (None: it has none of its own), seconds it took to become ready
OnStarted = Callable[[str, int | None, float], None]


def supervise(layout: Layout, ready_fd: int) -> int:
    """In the background: run the stack, publish stack.env, report, wait for SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    layout.state.mkdir(parents=True, exist_ok=True)
    layout.supervisor_pid.write_text(f"{os.getpid()}\n")
    ready = os.fdopen(ready_fd, "w", buffering=1)

    def started(name: str, seconds: float) -> None:
        port = layout.ports.get(name)
        _say(ready, f"started {name} {port if port is not None else '-'} {seconds:.1f}")

    try:
        with Stack(layout, environ=os.environ, on_ready=started) as running:
            write_env_file(layout.env_file, running.env)
            _say(ready, "READY")
            _close(ready)
            reported: set[str] = set()
            while not stop.wait(1.0):
                for name, code in running.exited().items():
                    if name not in reported:
                        reported.add(name)
                        print(
                            f"{name} exited unexpectedly (status {code}); not restarted, "
                            "the others keep running; `make down` stops them",
                            file=sys.stderr,
                            flush=True,
                        )
        return 0
    except Exception as exc:
        _say(ready, f"FAILED\n{exc}")
        _close(ready)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        layout.supervisor_pid.unlink(missing_ok=True)
        layout.env_file.unlink(missing_ok=True)


def _say(ready: IO[str], message: str) -> None:
    # `up` may have given up waiting (or been interrupted): the log has it all.
    if not ready.closed:
        with contextlib.suppress(BrokenPipeError):
            ready.write(message + "\n")


def _close(ready: IO[str]) -> None:
    with contextlib.suppress(BrokenPipeError):
        ready.close()


def wait_until_up(fd: int, *, silence_s: float, on_started: OnStarted) -> str | None:
    """Read the ready pipe until READY (None) or a failure, whose message it returns.

    Gives up when the supervisor says nothing for `silence_s`: each service's
    start is bounded, not the sum of them.
    """
    deadline = time.monotonic() + silence_s
    buffered = b""
    failed: list[str] | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return f"the supervisor said nothing for {silence_s:.0f}s (see its log)"
        chunk = os.read(fd, 4096)
        deadline = time.monotonic() + silence_s
        *lines, rest = (buffered + chunk).split(b"\n")
        buffered = rest
        for raw in lines:
            line = raw.decode(errors="replace")
            if failed is not None:
                failed.append(line)
            elif line == "READY":
                return None
            elif line == "FAILED":
                failed = []
            elif line.startswith("started "):
                _, name, port, seconds = line.split()
                on_started(name, None if port == "-" else int(port), float(seconds))
        if not chunk:  # the supervisor closed the pipe: it exited or failed
            if failed is None:
                return "the supervisor exited without an answer"
            return "\n".join([*failed, buffered.decode(errors="replace")]).strip()
