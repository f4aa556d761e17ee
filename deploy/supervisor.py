"""`make up`'s supervisor: the background process that owns the stack.

`python -m deploy up` starts it in a new session (deploy/commands.py); it does
`with Stack(layout, environ=os.environ) as running`, writes
`<state>/stack.env`, answers on the ready pipe and waits for SIGTERM. It
restarts nothing: a service that exits on its own is reported once in
logs/supervisor.log, the others keep running, and `status` lists it as exited
until `down`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from deploy.envfile import write_env_file
from deploy.layout import Layout
from deploy.stack import Stack


def supervise(layout: Layout, ready_fd: int) -> int:
    """In the background: run the stack, publish stack.env, report, wait for SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    layout.state.mkdir(parents=True, exist_ok=True)
    layout.supervisor_pid.write_text(f"{os.getpid()}\n")
    ready = os.fdopen(ready_fd, "w")
    try:
        with Stack(layout, environ=os.environ) as running:
            write_env_file(layout.env_file, running.env)
            ready.write("READY\n")
            ready.close()
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
        if not ready.closed:
            ready.write(f"FAILED {exc}\n")
            ready.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        layout.supervisor_pid.unlink(missing_ok=True)
        layout.env_file.unlink(missing_ok=True)
