"""NATS connection with reconnect, and JetStream stream creation.

The connection is made in the background: a service starts and takes writes
while NATS is down (the outbox keeps the events) and reports NATS as degraded.

A server that stops answering without closing the connection (paused, a network that
drops packets) is found by the client's own PINGs within ``ping_interval x
(max_outstanding_pings + 1)`` seconds, and the client reconnects. Nothing here waits for a
PONG under a timeout (``Client.flush(timeout=...)``): nats-py leaves the cancelled future in
its PONG queue, and the late PONG then kills its read loop (``InvalidStateError``) while the
connection still says it is connected; readiness asks JetStream a question instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from datetime import datetime

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

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


async def read_stream(
    js: JetStreamContext, stream: str, config: ConsumerConfig, *, batch: int = 1000
) -> AsyncGenerator[Msg, None]:
    """The messages a consumer of this call's own (``config``, acks off) is given, in order, in
    batches, until none is pending; the consumer is deleted after. Raises NATS's TimeoutError
    when pending messages do not come (a caller would take a short read for the whole stream)."""
    config.ack_policy = AckPolicy.NONE
    config.mem_storage = True
    config.inactive_threshold = 30.0
    subscription = await js.pull_subscribe("", durable=None, stream=stream, config=config)
    consumer: str | None = None
    try:
        info = await subscription.consumer_info()
        consumer = info.name
        pending = int(info.num_pending or 0)
        misses = 0
        while pending > 0:
            try:
                messages = await subscription.fetch(min(batch, pending), timeout=5)
            except NatsTimeoutError:
                misses += 1  # a slow or recovering server: read on a little before giving up
                if misses == 3:
                    raise
                continue
            for message in messages:
                yield message
                pending = int(message.metadata.num_pending)
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, consumer)


async def stored_message_ids(
    js: JetStreamContext, stream: str, since: datetime, wanted: set[str]
) -> set[str]:
    """Which of ``wanted`` (``Nats-Msg-Id`` values) the stream holds in messages stored from
    ``since`` on (headers only)."""
    found: set[str] = set()
    if not wanted:
        return found
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since, headers_only=True
    )
    messages = read_stream(js, stream, config)
    async for message in messages:
        message_id = (message.headers or {}).get("Nats-Msg-Id")
        if message_id in wanted:
            found.add(message_id)
            if found == wanted:
                await messages.aclose()
                break
    return found


class NatsLink:
    """One process's NATS connection, made and kept in the background."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        streams: list[StreamSpec] | None = None,
        connect_timeout: float = 2.0,
        ping_interval: float = 2.0,
        max_outstanding_pings: int = 2,
        reconnect_time_wait: float = 0.25,
    ) -> None:
        self.url = url
        self.name = name
        self.streams = list(streams or [])
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.max_outstanding_pings = max_outstanding_pings
        self.reconnect_time_wait = reconnect_time_wait
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._connected = asyncio.Event()  # set while connected: waiters wake on reconnection
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

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the connection to be up; whether it is."""
        if self.connected:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        return self.connected

    async def ensure_streams(self) -> None:
        for spec in self.streams:
            await ensure_stream(self.js, spec)

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = repr(exc)
        log.warning("nats error", extra={"error": repr(exc), "nats_url": self.url})

    async def _on_disconnected(self) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning("nats disconnected", extra={"nats_url": self.url})

    async def _on_reconnected(self) -> None:
        log.info("nats reconnected", extra={"nats_url": self.url})
        self._connected.set()
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
                    reconnect_time_wait=self.reconnect_time_wait,
                    ping_interval=self.ping_interval,
                    max_outstanding_pings=self.max_outstanding_pings,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                self._nc = nc
                self._js = nc.jetstream(timeout=5.0)
                await self.ensure_streams()
                self.last_error = None
                self._connected.set()
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

    async def ping(self, timeout: float = 2.0) -> None:
        """Raise unless JetStream answers a request now (a request/reply round trip through the
        read loop: a connection that only says it is connected fails it)."""
        if not self.connected:
            raise ConnectionError(self.last_error or "NATS is not connected")
        try:
            await self.nc.jetstream(timeout=timeout).account_info()
        except NatsTimeoutError:
            raise ConnectionError(f"NATS did not answer within {timeout:g}s") from None

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
