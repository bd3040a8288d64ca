"""Prometheus metrics of one process, served at ``/metrics`` (prometheus-client).

Counters and histograms are updated where things happen (a request, a redelivery, a
dead letter); gauges of shared state (the outbox backlog, consumer lag, dead-letter rows)
are read when Prometheus scrapes, by the refreshers a process registers on its
:class:`MetricsEndpoint`. Labels are bounded: route templates (``/api/v1/demand/{id}``),
never raw paths; consumer names; a few fixed outcomes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (several workers behind one port) prometheus-client
keeps the values in files there and ``/metrics`` sums them across the workers
(the documented multiprocess mode); the gauges say how to combine workers' values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("seedbed.metrics")

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds: from a cached read (about a millisecond) to an import or a slow upstream.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- HTTP ------------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "seedbed_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "seedbed_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)

# -- outbox, consumers, dead letters (refreshed at scrape time, or counted as they happen) -------

OUTBOX_BACKLOG = Gauge(
    "seedbed_outbox_backlog",
    "Committed events not yet published to NATS.",
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "seedbed_outbox_oldest_unsent_age_seconds",
    "Age of the oldest committed event not yet published (0 when none).",
    multiprocess_mode="mostrecent",
)
OUTBOX_PUBLISHED = Counter("seedbed_outbox_published", "Events published from the outbox and acked.")
CONSUMER_LAG = Gauge(
    "seedbed_consumer_lag",
    "Messages of the stream not yet delivered to the durable consumer.",
    ["consumer"],
    multiprocess_mode="mostrecent",
)
CONSUMER_ACK_PENDING = Gauge(
    "seedbed_consumer_ack_pending",
    "Messages delivered to the durable consumer and not yet acked.",
    ["consumer"],
    multiprocess_mode="mostrecent",
)
CONSUMER_PROCESSED = Counter("seedbed_consumer_processed", "Events a durable consumer applied.", ["consumer"])
CONSUMER_REDELIVERIES = Counter(
    "seedbed_consumer_redeliveries",
    "Messages a durable consumer received again (a nak, a lost ack, a timeout).",
    ["consumer"],
)
CONSUMER_DEAD_LETTERS = Counter(
    "seedbed_consumer_dead_letters", "Events a durable consumer dead-lettered.", ["consumer"]
)
DEAD_LETTERS_WAITING = Gauge(
    "seedbed_dead_letters_waiting",
    "Dead-lettered events not replayed yet, per durable consumer.",
    ["consumer"],
    multiprocess_mode="mostrecent",
)

# -- database --------------------------------------------------------------------------------

DB_POOL_IN_USE = Gauge(
    "seedbed_db_pool_connections_in_use",
    "Database connections checked out of this process's pool.",
    multiprocess_mode="livesum",
)

Refresher = Callable[[], Awaitable[None]]


class HttpMetricsMiddleware:
    """Pure ASGI: one count and one latency observation per request, by route template.

    ``route_of`` names the template of a path (:class:`RouteTable`); a path that fits none
    is ``unmatched``, so a scan of random paths adds no label.
    """

    def __init__(self, app: ASGIApp, *, route_of: Callable[[str], str | None]) -> None:
        self.app = app
        self.route_of = route_of
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = self.route_of(scope["path"])
        method = scope["method"]
        key = (method, route or UNMATCHED_ROUTE, status)
        children = self._children.get(key)
        if children is None:
            labels = (method if method in _METHODS else "OTHER", key[1], str(status))
            children = (HTTP_REQUESTS.labels(*labels), HTTP_DURATION.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class RouteTable:
    """Maps a path to the template among ``templates`` it fits (``{name}`` is one segment)."""

    def __init__(self, templates: Sequence[str]) -> None:
        self._by_shape: dict[tuple[int, str], list[tuple[str, tuple[str | None, ...]]]] = {}
        # Literal segments first, so /mentors/recommendations wins over /mentors/{id}.
        for template in sorted(set(templates), key=lambda t: t.count("{")):
            parts = template.strip("/").split("/")
            shape = (len(parts), parts[0])
            pattern = tuple(None if p.startswith("{") else p for p in parts)
            self._by_shape.setdefault(shape, []).append((template, pattern))

    def __call__(self, path: str) -> str | None:
        parts = path.strip("/").split("/")
        for template, pattern in self._by_shape.get((len(parts), parts[0]), ()):
            if all(p is None or p == part for p, part in zip(pattern, parts, strict=True)):
                return template
        return None


class AppRoutes:
    """The route templates of a FastAPI app, read from its OpenAPI document on first use (an
    included router's route knows only its own part of the path), plus ``extra`` templates."""

    def __init__(self, app: FastAPI, extra: Sequence[str] = ()) -> None:
        self.app = app
        self.extra = list(extra)
        self._table: RouteTable | None = None

    def __call__(self, path: str) -> str | None:
        if self._table is None:
            self._table = RouteTable([*self.app.openapi().get("paths", {}), *self.extra])
        return self._table(path)


def track_pool(engine: AsyncEngine) -> None:
    """Count this engine's connections in use (pool checkout and checkin events)."""
    sync_engine = engine.sync_engine

    def checked_out(*_: Any) -> None:
        DB_POOL_IN_USE.inc()

    def checked_in(*_: Any) -> None:
        DB_POOL_IN_USE.dec()

    sa_event.listen(sync_engine, "checkout", checked_out)
    sa_event.listen(sync_engine, "checkin", checked_in)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR_ENV))


def mark_process_dead() -> None:
    """At a worker's exit in multiprocess mode: its live gauges stop counting."""
    if multiprocess_mode():
        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class MetricsEndpoint:
    """``GET /metrics``: runs the refreshers (each bounded in time), then the text format."""

    def __init__(self, refresh_timeout: float = 2.0) -> None:
        self.refreshers: list[Refresher] = []
        self.refresh_timeout = refresh_timeout

    def add(self, refresher: Refresher) -> None:
        self.refreshers.append(refresher)

    async def refresh(self) -> None:
        async def one(refresher: Refresher) -> None:
            try:
                await asyncio.wait_for(refresher(), self.refresh_timeout)
            except Exception as exc:
                # A gauge we cannot read now keeps its last value; the scrape still answers.
                log.warning("metrics refresh failed", extra={"error": repr(exc)})

        await asyncio.gather(*(one(refresher) for refresher in self.refreshers))

    def registry(self) -> CollectorRegistry:
        if not multiprocess_mode():
            return REGISTRY
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry

    async def __call__(self, request: Request) -> Response:
        await self.refresh()
        return Response(generate_latest(self.registry()), media_type=CONTENT_TYPE_LATEST)
