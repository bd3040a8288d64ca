"""What the pages read, and how: the services' public API, signed as ``PAGES_PRINCIPAL``.

The principal is an ``integrator`` with no subject: ACCESS.md gives that role exactly what
every caller may read (public, non-draft lines; anchors; the pipeline as published; the
milestone catalogue) and nothing an anchor, enterprise or staff member sees of their own.
Whoever looks at a page, even a staff member with a key, gets this principal's view.

Caches: a pipeline view is kept with its ETag and revalidated on every page (``If-None-Match``,
a 304 costs the service one query); the filters' choices are kept per snapshot ``version``;
lines, anchors and milestone names for a few seconds (``GATEWAY_PAGES_*_SECONDS``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from gateway.settings import GatewaySettings
from shared.principal import HEADER, Principal, encode_principal, sign

PAGES_PRINCIPAL = Principal(role="integrator", subject_id=None, actor="gateway-pages")
OPEN_STATUSES = "planned,tendering"
PAGE_SIZE = 500

T = TypeVar("T")


class Unavailable(Exception):
    """A service did not answer (down, slow or failing)."""


class NotFound(Exception):
    pass


class Refused(Exception):
    """The service refused the request (a bad filter): its problem's field errors."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors


class _SignedAsPages(httpx.Auth):
    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.payload = encode_principal(PAGES_PRINCIPAL)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[HEADER] = sign(
            self.secret, request.method, request.url.raw_path.decode("latin-1"), self.payload
        )
        yield request


@dataclass
class View:
    """One pipeline answer and the ETag it came with."""

    etag: str
    body: dict[str, Any]

    @property
    def version(self) -> int:
        return int(self.body.get("version") or 0)


class Lru(Generic[T]):
    """The ``size`` entries used last."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, T] = OrderedDict()

    def get(self, key: str) -> T | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: T) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


@dataclass
class LineSet:
    items: list[dict[str, Any]]
    complete: bool  # False when more lines matched than the pages read at once


class PublicReader:
    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient, secret: bytes) -> None:
        self.settings = settings
        self.http = http
        self.auth = _SignedAsPages(secret)
        upstreams = settings.upstreams()
        self.demand = upstreams["demand"] + "/api/v1"
        self.enterprises = upstreams["enterprises"] + "/api/v1"
        self.views: Lru[View] = Lru(settings.pages_cache_size)
        self._timed: Lru[tuple[float, Any]] = Lru(settings.pages_cache_size)

    async def _get(
        self, url: str, params: Sequence[tuple[str, str]] = (), headers: dict[str, str] | None = None
    ) -> httpx.Response:
        try:
            response = await self.http.get(url, params=list(params), auth=self.auth, headers=headers)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{url}: {exc!r}") from exc
        if response.status_code == 404:
            raise NotFound(url)
        if response.status_code in (400, 422):
            body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
            raise Refused(response.status_code, str(body.get("detail") or ""), list(body.get("errors") or []))
        if response.status_code not in (200, 304):
            raise Unavailable(f"{url} answered {response.status_code}")
        return response

    async def pipeline(self, params: Sequence[tuple[str, str]]) -> View:
        """A view of the published pipeline: from the cache when the service says it is current."""
        key = "&".join(f"{k}={v}" for k, v in params)
        cached = self.views.get(key)
        headers = {"If-None-Match": cached.etag} if cached is not None else None
        response = await self._get(self.demand + "/pipeline", params, headers)
        if response.status_code == 304 and cached is not None:
            return cached
        view = View(response.headers.get("etag", ""), response.json())
        self.views.put(key, view)
        return view

    async def _fresh(self, key: str, seconds: float) -> Any:
        entry = self._timed.get(key)
        if entry is not None and time.monotonic() - entry[0] < seconds:
            return entry[1]
        return None

    def _keep(self, key: str, value: Any) -> None:
        self._timed.put(key, (time.monotonic(), value))

    async def _walk(self, url: str, params: list[tuple[str, str]], cap: int) -> LineSet:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = (
                await self._get(
                    url, [*params, ("limit", str(PAGE_SIZE))] + ([("cursor", cursor)] if cursor else [])
                )
            ).json()
            items.extend(page.get("items", []))
            cursor = page.get("next_cursor")
            if not cursor:
                return LineSet(items, True)
            if len(items) >= cap:
                return LineSet(items[:cap], False)

    async def open_lines(self, params: Sequence[tuple[str, str]]) -> LineSet:
        """Public lines in the pipeline (planned or out to tender), up to ``pages_lines_max``."""
        query = [("status", OPEN_STATUSES), *params]
        key = "lines?" + "&".join(f"{k}={v}" for k, v in query)
        found = await self._fresh(key, self.settings.pages_lines_cache_seconds)
        if found is None:
            found = await self._walk(self.demand + "/demand", query, self.settings.pages_lines_max)
            self._keep(key, found)
        assert isinstance(found, LineSet)
        return found

    async def line(self, line_id: str) -> dict[str, Any]:
        body = (await self._get(f"{self.demand}/demand/{line_id}")).json()
        assert isinstance(body, dict)
        return body

    async def anchors(self) -> LineSet:
        found = await self._fresh("anchors", self.settings.pages_anchors_cache_seconds)
        if found is None:
            found = await self._walk(self.demand + "/anchors", [], self.settings.pages_anchors_max)
            self._keep("anchors", found)
        assert isinstance(found, LineSet)
        return found

    async def anchor(self, anchor_id: str) -> dict[str, Any]:
        body = (await self._get(f"{self.demand}/anchors/{anchor_id}")).json()
        assert isinstance(body, dict)
        return body

    async def milestone_names(self) -> dict[str, dict[str, Any]]:
        """The readiness milestone catalogue by code; empty when the enterprises service is down
        (a line's requirements are then shown by their codes)."""
        found = await self._fresh("milestones", self.settings.pages_anchors_cache_seconds)
        if found is None:
            try:
                walked = await self._walk(self.enterprises + "/milestone-definitions", [], 1000)
            except (Unavailable, NotFound, Refused):
                return {}
            found = {m["code"]: m for m in walked.items if isinstance(m, dict) and "code" in m}
            self._keep("milestones", found)
        assert isinstance(found, dict)
        return found

    async def impact(self, group_by: str) -> dict[str, Any]:
        """The shareable impact report (the one anyone but staff may read), broken down by ``group_by``."""
        key = f"impact?{group_by}"
        found = await self._fresh(key, self.settings.pages_anchors_cache_seconds)
        if found is None:
            params = [("shareable", "true"), ("group_by", group_by)]
            found = (await self._get(self.enterprises + "/reports/impact", params)).json()
            self._keep(key, found)
        assert isinstance(found, dict)
        return found

    async def ocds(self, params: Sequence[tuple[str, str]]) -> AsyncIterator[bytes]:
        """The OCDS release package of public lines, streamed as the service writes it."""
        request = self.http.build_request("GET", self.demand + "/demand/ocds", params=list(params))
        try:
            response = await self.http.send(request, auth=self.auth, stream=True)
        except httpx.HTTPError as exc:
            raise Unavailable(repr(exc)) from exc
        if response.status_code != 200:
            await response.aclose()
            raise Unavailable(f"OCDS export answered {response.status_code}")

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return body()
