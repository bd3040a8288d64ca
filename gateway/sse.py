"""``GET /api/v1/events/stream``: Server-Sent Events from ``SEEDBED_EVENTS``.

One ordered (ephemeral, in-memory, flow-controlled) JetStream consumer per connection,
filtered on the server by subject to the types the caller asked for and may see
(``gateway.visibility``; checked again per message). It starts after the position in
``Last-Event-ID`` (what a reconnecting ``EventSource`` sends), else after ``?since=``,
else with the events that arrive from now on; it is created before the answer starts,
so nothing published after the client has the headers is missed.

Each event is ``id: <position in SEEDBED_EVENTS>``, ``event: <type>``, ``data: <the
CloudEvent JSON>``. An event is sent at most once per connection, by event id (the
``Nats-Msg-Id`` the message kept from its service's stream): should the stream ever hold
a second copy, the client does not see it twice. A comment line every
``sse_heartbeat_seconds`` of quiet keeps proxies from closing the connection, and at each
one the credential is checked again (a revoked or expired API key, or an expired token,
ends the stream). The consumer is deleted as soon
as the client goes away (and the server drops it by itself after ``inactive_threshold``
should the gateway die first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import nats.errors
from nats.js.api import ConsumerConfig, DeliverPolicy
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.event_stream import EVENTS_STREAM
from gateway.metrics import SSE_STREAMS_OPEN
from gateway.visibility import TypePattern, matches_any, may_receive, may_see
from shared.nats import NatsLink

log = logging.getLogger("seedbed.gateway.sse")

INACTIVE_THRESHOLD_SECONDS = 10.0
SEEN_EVENT_IDS = 100_000  # per connection: the ids of the last events sent, for de-duplication
RETRY_MILLISECONDS = 2000
MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

StillValid = Callable[[], Awaitable[bool]]


def frame(position: int, event_type: str, data: bytes) -> bytes:
    """One SSE event; a JSON body has no line breaks but its whitespace, kept as data lines."""
    lines = b"".join(b"data: " + line + b"\n" for line in data.splitlines() or [b""])
    return b"id: %d\nevent: %s\n%s\n" % (position, event_type.encode(), lines)


class StreamCounter:
    """Open streams per credential on this replica, to bound what one caller can hold open."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        if self._open.get(key, 0) >= self.limit:
            return False
        self._open[key] = self._open.get(key, 0) + 1
        SSE_STREAMS_OPEN.inc()
        return True

    def release(self, key: str) -> None:
        if key in self._open:
            SSE_STREAMS_OPEN.dec()
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)

    def total(self) -> int:
        return sum(self._open.values())


class SentEvents:
    """The ids of the last ``limit`` events a connection sent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str | None) -> bool:
        """Whether the event was not sent yet (and note it as sent); an event without an id
        (not from the outbox) always passes."""
        if event_id is None:
            return True
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return True


@dataclass
class EventStream:
    """One connection's consumer and what it may pass on."""

    link: NatsLink
    role: str
    patterns: Sequence[TypePattern]
    subscription: object
    subject_id: str | None = None  # the principal's object (an anchor's own line events)

    @classmethod
    async def open(
        cls,
        link: NatsLink,
        role: str,
        patterns: Sequence[TypePattern],
        after: int | None,
        subject_id: str | None = None,
    ) -> EventStream:
        subjects = [pattern.nats_subject for pattern in patterns]
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.NEW if after is None else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=None if after is None else after + 1,
            filter_subjects=subjects if len(subjects) > 1 else None,
        )
        subscription = await link.js.subscribe(
            subjects[0],
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            config=config,
            inactive_threshold=INACTIVE_THRESHOLD_SECONDS,
        )
        return cls(link, role, patterns, subscription, subject_id)

    async def close(self) -> None:
        subscription = self.subscription
        # The ordered consumer's current name (it is re-created under a new one after a gap).
        name = None
        if self.link.connected:
            with contextlib.suppress(Exception):
                name = (await subscription.consumer_info()).name  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()  # type: ignore[attr-defined]
        if name and self.link.connected:
            with contextlib.suppress(Exception):
                await self.link.js.delete_consumer(EVENTS_STREAM, name)

    async def frames(self, heartbeat: float, still_valid: StillValid) -> AsyncIterator[bytes]:
        """The bytes to send, until the caller stops reading or the credential lapses."""
        next_msg = self.subscription.next_msg  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        checked = loop.time()
        sent = SentEvents(SEEN_EVENT_IDS)
        yield b"retry: %d\n: stream open\n\n" % RETRY_MILLISECONDS
        while True:
            try:
                message = await next_msg(timeout=heartbeat)
            except nats.errors.TimeoutError:
                message = None
            except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
                return  # the gateway is stopping: the client reconnects with Last-Event-ID
            if loop.time() - checked >= heartbeat:  # on a busy stream as on a quiet one
                checked = loop.time()
                if not await still_valid():
                    yield b": credential no longer valid, or not checkable now\n\n"
                    return
            if message is None:
                yield b": keep-alive\n\n"
                continue
            event_type = message.subject
            if not (may_see(self.role, event_type) and matches_any(self.patterns, event_type)):
                continue  # the server-side filter already did this; this is the belt to its braces
            if not may_receive(self.role, self.subject_id, event_type, message.data):
                continue  # an event about another anchor's own line
            if not sent.first_time((message.headers or {}).get("Nats-Msg-Id")):
                continue
            yield frame(message.metadata.sequence.stream, event_type, message.data)


class EventStreamResponse(StreamingResponse):
    """A streaming answer that closes its consumer however it ends: finished, failed, or
    cancelled because the client went away (even before the first byte was sent)."""

    media_type = MEDIA_TYPE

    def __init__(self, stream: EventStream, body: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(body, headers=HEADERS)
        self.stream = stream
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
            # Shielded: the client going away cancels this task, and the cleanup must still run.
            with anyio.CancelScope(shield=True):
                await self.stream.close()
