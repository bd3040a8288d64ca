"""NATS connection with reconnect, and JetStream stream creation.

The connection is made in the background: a service starts and takes writes
while NATS is down (the outbox keeps the events) and reports itself not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from shared.events import StreamSpec
from shared.tasks import cancel_requested, stop_task

log = logging.getLogger("seedbed.nats")

STREAM_NAME_IN_USE = 10058
STREAM_STORE_BUSY = 10049  # "error creating store for stream"


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> None:
    """Create the stream, or bring an existing one to this configuration."""
    config = StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        storage=StorageType.FILE,
        duplicate_window=spec.duplicate_window_seconds,
        max_age=spec.max_age_seconds or None,
        num_replicas=spec.replicas,
    )
    for attempt in range(20):
        try:
            await js.add_stream(config)
            return
        except BadRequestError as exc:
            if exc.err_code == STREAM_NAME_IN_USE:
                await js.update_stream(config)
                return
            if exc.err_code != STREAM_STORE_BUSY or attempt == 19:
                raise
            await asyncio.sleep(0.05)  # the store of a stream deleted a moment ago is still going


async def stream_exists(js: JetStreamContext, name: str) -> bool:
    try:
        await js.stream_info(name)
    except NotFoundError:
        return False
    return True


class NatsLink:
    """One process's NATS connection, made and kept in the background."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        streams: list[StreamSpec] | None = None,
        connect_timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.name = name
        self.streams = list(streams or [])
        self.connect_timeout = connect_timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def connection_epoch(self) -> tuple[int, int] | None:
        """Changes whenever the connection is new or re-made (None while disconnected): a
        subscriber can tell that it may have missed messages during the gap."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return None
        return (id(nc), int(nc.stats["reconnects"]))

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise ConnectionError("NATS is not connected yet")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise ConnectionError("NATS is not connected yet")
        return self._js

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_until_done(), name=f"nats-connect-{self.name}")

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until connected and the streams exist; False on timeout."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def ensure_streams(self) -> None:
        for spec in self.streams:
            await ensure_stream(self.js, spec)

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = repr(exc)
        log.warning("nats error", extra={"error": repr(exc), "nats_url": self.url})

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("nats disconnected", extra={"nats_url": self.url})

    async def _on_reconnected(self) -> None:
        log.info("nats reconnected", extra={"nats_url": self.url})
        with contextlib.suppress(Exception):
            # A server that lost its store comes back without our streams.
            await self.ensure_streams()

    async def _connect_until_done(self) -> None:
        delay = 0.1
        while not cancel_requested():
            try:
                nc = await nats.connect(
                    self.url,
                    name=self.name,
                    connect_timeout=self.connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                self._nc = nc
                self._js = nc.jetstream(timeout=5.0)
                await self.ensure_streams()
                self.last_error = None
                self._ready.set()
                log.info("nats connected", extra={"nats_url": self.url})
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = repr(exc)
                log.warning("nats not reachable yet", extra={"nats_url": self.url, "error": repr(exc)})
                if self._nc is not None:
                    with contextlib.suppress(Exception):
                        await self._nc.close()
                    self._nc = None
                    self._js = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def ping(self) -> None:
        """Raise unless the server answers now."""
        if not self.connected:
            raise ConnectionError(self.last_error or "NATS is not connected")
        await self.nc.flush(timeout=2)

    async def close(self) -> None:
        self._closing = True
        await stop_task(self._task)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = None
        self._js = None
