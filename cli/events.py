"""``seedbed events tail``: the gateway's Server-Sent Events stream, resumed after a drop.

Each event's ``id`` is its position in the stream; after a dropped connection the tail
connects again with ``Last-Event-ID`` set to the last id it printed, so the gateway carries
on from there: nothing is missed and nothing is printed twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from cli.client import GatewayError, refusal

STREAM = "/api/v1/events/stream"


@dataclass
class Tail:
    url: str
    key: str
    types: list[str]
    since: int | None = None
    count: int | None = None  # stop after this many events
    reconnect: bool = True
    max_retries: int = 30  # connection attempts in a row before giving up
    idle_seconds: float = 60.0  # no byte at all (the gateway sends a heartbeat every 15 s): a drop
    on_drop: Callable[[str, str | None, float], None] = lambda why, last_id, delay: None

    def run(self, show: Callable[[str, str, dict[str, Any]], None]) -> int:
        """Print events with ``show(id, type, cloud event)`` until ``count``; how many were shown."""
        last_id: str | None = None
        shown = 0
        failures = 0
        connected = False  # a gateway that never answered is down, not dropped: say so at once
        timeout = httpx.Timeout(10.0, read=self.idle_seconds)
        while True:
            headers = {"Authorization": f"Bearer {self.key}"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            params: dict[str, Any] = {"types": self.types} if self.types else {}
            if self.since is not None and last_id is None:
                params["since"] = self.since
            try:
                with (
                    httpx.Client(base_url=self.url, timeout=timeout) as http,
                    connect_sse(http, "GET", STREAM, params=params, headers=headers) as source,
                ):
                    response = source.response
                    if response.status_code != 200:
                        response.read()
                        error = refusal("GET", STREAM, response)
                        if response.status_code < 500 and response.status_code != 429:
                            raise error
                        raise httpx.RemoteProtocolError(str(error))
                    failures, connected = 0, True
                    for event in source.iter_sse():
                        if not event.data:
                            continue
                        last_id = event.id or last_id
                        show(event.id, event.event, json.loads(event.data))
                        shown += 1
                        if self.count is not None and shown >= self.count:
                            return shown
                    why = "the gateway closed the stream"
            except (httpx.HTTPError, SSEError) as exc:
                if not connected and isinstance(exc, httpx.TransportError):
                    raise GatewayError(
                        f"cannot reach the gateway at {self.url} ({type(exc).__name__}): is it running? "
                        "Start it with `make run`, or name another with --url or SEEDBED_URL."
                    ) from None
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            failures += 1
            if not self.reconnect or failures > self.max_retries:
                raise GatewayError(f"the event stream at {self.url} dropped ({why}) and could not be resumed")
            delay = min(0.5 * 2 ** (failures - 1), 10.0)
            self.on_drop(why, last_id, delay)
            time.sleep(delay)
