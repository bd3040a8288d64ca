"""Ports for the servers tests start (nats-servers, uvicorn processes, webhook receivers).

``free_port()`` of ``shared.testing.nats_server`` asks the kernel for an ephemeral port and lets it go:
the kernel may then hand the same port to an outgoing connection (to PostgreSQL, NATS, ...)
before the server binds it, or while a test has stopped a server it restarts on the same port;
and under pytest-xdist two workers draw from the same pool. ``server_port()`` takes ports below
the kernel's ephemeral range instead, so no outgoing connection ever gets one, from a block of
its own per xdist worker, and never hands out a port twice in one process.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

from shared.testing.nats_server import free_port

LOWEST = 10_000  # below: well-known and registered ports a machine may be running
_lock = threading.Lock()
_given: set[int] = set()
_next: int | None = None


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def worker_block() -> range | None:
    """This process's ports: its xdist worker's share of those below the ephemeral range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    size = (_ephemeral_start() - LOWEST) // count
    if size < 100:
        return None  # no room below the ephemeral range on this machine
    start = LOWEST + index * size
    return range(start, start + size)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def server_port() -> int:
    """A port no server listens on, for a server a test is about to start."""
    global _next
    block = worker_block()
    if block is None:
        return free_port()
    with _lock:
        if _next is None:  # a random start: two test runs on one machine rarely meet
            _next = random.randrange(len(block))
        for _ in range(len(block)):
            port = block[_next % len(block)]
            _next += 1
            if port not in _given and _bindable(port):
                _given.add(port)
                return port
    return free_port()
