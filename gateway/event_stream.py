"""``SEEDBED_EVENTS``: one JetStream stream of every service's events, for integrators.

It *sources* the services' streams (``ENTERPRISES``, ``DEMAND``, ``MENTORING``), keeping
their subjects, so its sequence is the one "stream position" of the SSE stream's ids and
the order in which webhooks are fanned out.

The server retries a source that did not exist when the sourcing stream was configured only
every 10-12 s, so the stream lists only the source streams that exist; a background task
adds the others (``update_stream``) as they appear, and re-creates the stream if the server
lost it. Sources are only ever added, never removed: replicas that see different sets at
the same moment must not take a source away (re-adding it would source it again from the
start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from nats.js.api import StorageType, StreamConfig, StreamSource
from nats.js.errors import BadRequestError, NotFoundError

from gateway.routes import SERVICES
from gateway.settings import GatewaySettings
from shared.events import stream_for
from shared.nats import STREAM_NAME_IN_USE, NatsLink
from shared.tasks import cancel_requested, stop_task

log = logging.getLogger("seedbed.gateway.events")

EVENTS_STREAM = "SEEDBED_EVENTS"
SOURCE_STREAMS = tuple(stream_for(service).name for service in SERVICES)


class EventStreamKeeper:
    """Keeps ``SEEDBED_EVENTS`` in existence and sourcing every service stream that exists.

    ``generation`` grows each time the stream is found made anew (its creation time changed),
    and ``on_recreated`` runs then: the consumers of the lost stream went with it.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        link: NatsLink,
        on_recreated: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.link = link
        self.on_recreated = on_recreated
        self.sourced: frozenset[str] = frozenset()
        self.ready = asyncio.Event()  # set once the stream exists (with whatever sources exist)
        self.generation = 0
        self.created: datetime | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="events-stream")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    @property
    def complete(self) -> bool:
        return self.sourced >= set(SOURCE_STREAMS)

    @property
    def max_age_seconds(self) -> float:
        return self.settings.events_stream_max_age_days * 86400

    def _config(self, sources: list[str]) -> StreamConfig:
        return StreamConfig(
            name=EVENTS_STREAM,
            description="Every Seedbed event, sourced from the services' streams (subjects kept).",
            sources=[StreamSource(name=name) for name in sources],
            storage=StorageType.FILE,
            max_age=self.max_age_seconds or None,
            num_replicas=self.settings.stream_replicas,
            # Sourced messages keep their Nats-Msg-Id: a second copy within it is dropped here too.
            duplicate_window=self.settings.stream_duplicate_window_seconds,
        )

    async def ensure(self) -> None:
        """Create the stream, or add the source streams that have appeared since."""
        js = self.link.js
        existing: list[str] = []
        for name in SOURCE_STREAMS:
            with contextlib.suppress(NotFoundError):
                await js.stream_info(name)
                existing.append(name)
        try:
            info = await js.stream_info(EVENTS_STREAM)
        except NotFoundError:
            try:
                info = await js.add_stream(self._config(existing))
                log.info("events stream created", extra={"sources": existing})
            except BadRequestError as exc:
                if exc.err_code != STREAM_NAME_IN_USE:
                    raise
                info = await js.stream_info(EVENTS_STREAM)  # another replica made it just now
        current = [source.name for source in info.config.sources or []]
        wanted = current + [name for name in existing if name not in current]
        if (
            wanted != current
            or abs((info.config.max_age or 0) - self.max_age_seconds) > 1
            or abs((info.config.duplicate_window or 0) - self.settings.stream_duplicate_window_seconds)
            > 0.001
        ):
            info = await js.update_stream(self._config(wanted))
            log.info("events stream sources added", extra={"sources": wanted})
        self.sourced = frozenset(wanted)
        if self.created is not None and info.created is not None and info.created != self.created:
            self.generation += 1
            log.warning("events stream was made anew", extra={"generation": self.generation})
            if self.on_recreated is not None:
                await self.on_recreated()
        self.created = info.created or self.created

    async def _run(self) -> None:
        while not cancel_requested():
            await self.link.wait_ready()
            try:
                await self.ensure()
                self.last_error = None
                self.ready.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = repr(exc)
                log.warning("events stream not ensured", extra={"error": repr(exc)})
            settings = self.settings
            await asyncio.sleep(
                settings.events_stream_check_seconds
                if self.complete
                else settings.events_sources_check_seconds
            )
