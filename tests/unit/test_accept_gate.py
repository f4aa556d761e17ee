"""The accept gate on a real listening socket, without the rest of the stack."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import time

from service.accept_gate import ACCEPT_RETRY_S, AcceptGate


def test_the_gate_waits_instead_of_spinning_when_out_of_file_descriptors() -> None:
    """EMFILE leaves the connection pending and readable: retry later, not at once.

    Watching on would call the accept callback on every pass of the event
    loop (a worker at 100 % CPU doing nothing); the gate stops watching for
    ACCEPT_RETRY_S and then takes the connection once descriptors are free.
    """

    async def scenario() -> tuple[float, float, int]:
        accepted: list[socket.socket] = []
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        gate = AcceptGate(2, on_accept=accepted.append)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        lowest_free = os.open(os.devnull, os.O_RDONLY)
        os.close(lowest_free)
        try:
            # The next descriptor would be the limit itself: accept() gets EMFILE.
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
            cpu = time.process_time()
            gate.open([listener])
            await asyncio.sleep(ACCEPT_RETRY_S / 2)
            cpu_while_out = time.process_time() - cpu
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        waited = time.monotonic()
        while not accepted and time.monotonic() - waited < ACCEPT_RETRY_S + 5:
            await asyncio.sleep(0.05)
        waited = time.monotonic() - waited
        gate.close()
        for sock in (*accepted, client, listener):
            sock.close()
        return cpu_while_out, waited, len(accepted)

    cpu_while_out, waited, accepted = asyncio.run(scenario())
    print(f"\nCPU while out of descriptors {cpu_while_out:.3f} s; accepted {waited:.2f} s later")
    # Spinning would burn most of the half second; a busy 2-core machine
    # still leaves a wide margin.
    assert cpu_while_out < ACCEPT_RETRY_S / 5
    assert accepted == 1
