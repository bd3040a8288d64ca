"""The services' own documents (OpenAPI, AsyncAPI), fetched and kept for the gateway's merges.

Each service serves its document at an internal path; the gateway fetches it signed as staff
(actor ``gateway``) at start, retries while a service is down (backing off from 0.25 s to
10 s; what is there is served meanwhile, the missing services named) and refreshes it
periodically, keeping the last good document of a service that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, ClassVar

import httpx

from gateway.routes import SERVICES
from gateway.settings import GatewaySettings
from shared.tasks import cancel_requested, stop_task

log = logging.getLogger("seedbed.gateway.documents")


class ServiceDocuments:
    path: ClassVar[str]  # e.g. "/openapi.json"

    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient, service_auth: httpx.Auth) -> None:
        self.settings = settings
        self.http = http
        self.service_auth = service_auth
        self.documents: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}  # the last failure of each service, to log a change once
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._last_attempt = 0.0

    @property
    def refresh_seconds(self) -> float:
        raise NotImplementedError

    def check(self, document: Any) -> None:
        """Raise ValueError when a fetched document is not one of this kind."""
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")

    def changed(self) -> None:
        """A service's document changed: drop what was merged from the old one."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"documents{self.path}")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    @property
    def missing(self) -> list[str]:
        return [service for service in SERVICES if service not in self.documents]

    async def _run(self) -> None:
        delay = 0.25
        while not cancel_requested():
            try:
                await self.refresh()
            except Exception:
                log.exception("service documents %s not refreshed", self.path)
            if self.missing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                delay = 0.25
                await asyncio.sleep(self.refresh_seconds)

    async def _fetch(self, service: str, base_url: str) -> None:
        try:
            response = await self.http.get(f"{base_url}{self.path}", auth=self.service_auth, timeout=5.0)
            response.raise_for_status()
            document = response.json()
            self.check(document)
        except (httpx.HTTPError, ValueError) as exc:
            if self.errors.get(service) != repr(exc):  # said once, not at every retry
                log.warning("%s of %s not fetched: %r", self.path, service, exc)
            self.errors[service] = repr(exc)
            return
        if self.errors.pop(service, None) is not None:
            log.info("%s of %s fetched again", self.path, service)
        if self.documents.get(service) != document:
            self.documents[service] = document
            self.changed()

    async def refresh(self) -> None:
        """Fetch every service's document now (keeping the last good one of a service that fails)."""
        async with self._lock:
            self._last_attempt = time.monotonic()
            await asyncio.gather(
                *(self._fetch(service, url) for service, url in self.settings.upstreams().items())
            )

    async def fill_gaps(self) -> None:
        """Before serving a merge with a service missing: ask again, in case it came up since."""
        if self.missing and time.monotonic() - self._last_attempt > 0.25:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.refresh(), 3.0)
