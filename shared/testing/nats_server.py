"""A real nats-server for tests and benchmarks: JetStream on a file store, on a port of its
own; it can be killed and restarted (fault tests), and its streams reset between tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import nats

from shared.nats_server import nats_server_binary, port_open


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Wait for a process told to stop; kill it if it has not within ``timeout`` seconds."""
    if process is None:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class NatsServer:
    """One nats-server process with JetStream and a file store; can be killed and restarted."""

    def __init__(self, store_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.store_dir.parent / f"nats-{self.port}.log"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            nats_server_binary(),
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
            "--addr",
            self.host,
            "--port",
            str(self.port),
            "--log",
            str(self.log_path),
        ]

    def start(self, timeout: float = 10.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server did not listen on {self.url}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        stop_process(self.process, timeout)
        self.process = None

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    async def wait_jetstream(self, timeout: float = 10.0) -> None:
        """Wait until JetStream answers (it recovers its store after the port opens)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                nc = await nats.connect(self.url, connect_timeout=1, allow_reconnect=False)
                try:
                    await nc.jetstream().account_info()
                    return
                finally:
                    await nc.close()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def reset_jetstream(url: str) -> None:
    """Delete every stream (and so every consumer) on a test server."""
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream()
        for name in await js.streams_info():
            if name.config.name is not None:
                with contextlib.suppress(Exception):
                    await js.delete_stream(name.config.name)
        for _ in range(100):  # deletion finishes on disk a moment later
            if not await js.streams_info():
                break
            await asyncio.sleep(0.02)
    finally:
        await nc.close()


def external_nats_url() -> str | None:
    """The NATS named by SEEDBED_TEST_NATS_URL, for the external-NATS variant of the tests."""
    return os.environ.get("SEEDBED_TEST_NATS_URL") or None
