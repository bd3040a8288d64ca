"""Helpers of the integrator tests: a real HTTP webhook receiver, Standard Webhooks verification
written from the specification (not from the gateway's code), events published to the real
service streams, and a Server-Sent Events reader."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
from aiohttp import web

from shared.events import CONTENT_TYPE, CloudEvent, event_source, new_event, stream_for
from shared.nats import ensure_stream
from shared.testing.ports import server_port

SIGNATURE_TOLERANCE_SECONDS = 300


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's side of Standard Webhooks: the timestamp is recent and one of the
    space-separated ``v1,<base64>`` signatures is HMAC-SHA256 of ``id.timestamp.body``
    under the base64-decoded part of ``whsec_...``."""
    message_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    to_sign = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    query: str = ""

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A webhook receiver on a free port: answers ``plan`` in turn, then ``default``."""

    plan: list[int] = field(default_factory=list)
    default: int = 204
    received: list[Received] = field(default_factory=list)
    port: int = 0
    # While set and not yet released, every request waits for it (a receiver that hangs).
    hold: asyncio.Event | None = None
    waiting: Counter[str] = field(default_factory=Counter)  # requests held now, by query string
    most_waiting: Counter[str] = field(default_factory=Counter)  # the most ever held at once, by query
    most_waiting_in_all: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.hold is not None and not self.hold.is_set():
            endpoint = request.query_string
            self.waiting[endpoint] += 1
            self.most_waiting[endpoint] = max(self.most_waiting[endpoint], self.waiting[endpoint])
            self.most_waiting_in_all = max(self.most_waiting_in_all, sum(self.waiting.values()))
            try:
                await self.hold.wait()
            finally:
                self.waiting[endpoint] -= 1
        status = self.plan.pop(0) if self.plan else self.default
        self.received.append(
            Received({k.lower(): v for k, v in request.headers.items()}, body, status, request.query_string)
        )
        return web.Response(status=status)

    async def start(self, port: int | None = None) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = port or self.port or server_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def ids(self, status: int | None = None) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received if status is None or r.status == status]


async def make_service_streams(nats_url: str) -> None:
    """The three services' streams, as the running services make them."""
    nc = await nats.connect(nats_url)
    try:
        for service in ("enterprises", "demand", "mentoring"):
            await ensure_stream(nc.jetstream(), stream_for(service))
    finally:
        await nc.close()


async def publish(
    nats_url: str, event_type: str, data: dict[str, Any], subject: str | None = None
) -> CloudEvent:
    """Publish a CloudEvent to its service's stream, as a service's outbox relay does."""
    service = event_type.split(".", 1)[0]
    event = new_event(event_type, data, source=event_source(service), subject=subject)
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(
            event_type, event.to_bytes(), headers={"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE}
        )
    finally:
        await nc.close()
    return event


@dataclass
class SseEvent:
    id: int
    event: str
    data: dict[str, Any]


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of an open ``text/event-stream`` answer (comments skipped)."""
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield SseEvent(
                    int(fields["id"][0]), fields["event"][0], json.loads("\n".join(fields["data"]))
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))


async def read_until(events: AsyncIterator[SseEvent], done: Any, timeout: float = 15.0) -> list[SseEvent]:
    """Read events until ``done(list_so_far)`` is true."""
    seen: list[SseEvent] = []

    async def run() -> None:
        async for event in events:
            seen.append(event)
            if done(seen):
                return
        raise AssertionError("the stream ended")

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"not all expected events arrived; got {[(e.id, e.event) for e in seen]}"
        ) from None
    return seen
