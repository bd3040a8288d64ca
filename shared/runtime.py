"""A service's composition root: database, NATS, outbox relay, consumers, periodic jobs.

``create_service_app`` gives every service the same HTTP shell (problem+json,
request ids, JSON logs, the principal check, health routes, its AsyncAPI
document), so a service's ``app.py`` only names its routers, consumers and jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from shared import gauges, tracing
from shared.asyncapi import EventSpec, asyncapi_document
from shared.db import Database
from shared.dead_letters import dead_letters_router
from shared.events import StreamSpec, stream_for
from shared.health import ReadinessCheck, health_router
from shared.idempotency import purge_expired_keys
from shared.inbox import ConsumerSpec, EventConsumer
from shared.logs import RequestContextMiddleware, configure_logging
from shared.metrics import AppRoutes, HttpMetricsMiddleware, MetricsEndpoint, mark_process_dead, track_pool
from shared.nats import NatsLink
from shared.outbox import OutboxRelay
from shared.principal import PrincipalMiddleware
from shared.problems import document_problems, install_problem_handlers
from shared.settings import ServiceSettings
from shared.tasks import cancel_requested, stop_task

log = logging.getLogger("seedbed.runtime")

API_PREFIX = "/api/v1"
# Probes and the scrape come from the cluster, not through the gateway.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
KIT_PATHS = (*OPEN_PATHS, "/asyncapi.json")  # routes outside the OpenAPI document


@dataclass(frozen=True)
class PeriodicJob:
    """A job run every ``interval_seconds`` in every replica; it must be replica-safe itself
    (row locks with SKIP LOCKED, unique constraints, or conditional updates)."""

    name: str
    interval_seconds: float
    run: Callable[[ServiceRuntime], Awaitable[Any]]


class ServiceRuntime:
    """What one service process runs besides HTTP."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        consumers: Sequence[ConsumerSpec] = (),
        jobs: Sequence[PeriodicJob] = (),
        publishes: bool = True,
    ) -> None:
        self.settings = settings
        self.service = settings.service_name
        self.stream: StreamSpec | None = (
            stream_for(
                self.service,
                max_age_seconds=settings.stream_max_age_days * 86400,
                replicas=settings.stream_replicas,
                duplicate_window_seconds=settings.stream_duplicate_window_seconds,
            )
            if publishes
            else None
        )
        self.consumer_specs = list(consumers)
        self.jobs = [
            *jobs,
            PeriodicJob("purge-idempotency-keys", 3600, _purge_idempotency_keys),
        ]
        self._database: Database | None = None
        self._nats: NatsLink | None = None
        self.relay: OutboxRelay | None = None
        self.consumers: list[EventConsumer] = []
        self._job_tasks: list[asyncio.Task[None]] = []
        # /metrics; a service adds its own scrape-time readings with ``metrics.add``.
        self.metrics = MetricsEndpoint()

    @property
    def database(self) -> Database:
        if self._database is None:
            raise RuntimeError("the runtime has not started")
        return self._database

    @property
    def nats(self) -> NatsLink:
        if self._nats is None:
            raise RuntimeError("the runtime has not started")
        return self._nats

    async def start(self) -> None:
        settings = self.settings
        self._database = Database(settings.database_url, pool_size=settings.db_pool_size)
        track_pool(self._database.engine)
        tracing.instrument_engine(self._database.engine)
        self._nats = NatsLink(
            settings.nats_url,
            name=self.service,
            streams=[self.stream] if self.stream else [],
            ping_interval=settings.nats_ping_interval_seconds,
            max_outstanding_pings=settings.nats_max_outstanding_pings,
        )
        await self._nats.start()
        self.relay = OutboxRelay(
            self._database,
            self._nats,
            batch_size=settings.outbox_batch_size,
            sweep_seconds=settings.outbox_sweep_seconds,
            retention=timedelta(days=settings.outbox_retention_days),
            duplicate_window=settings.stream_duplicate_window_seconds,
        )
        await self.relay.start()
        self.consumers = [EventConsumer(self._database, self._nats, s) for s in self.consumer_specs]
        for consumer in self.consumers:
            await consumer.start()
        self._job_tasks = [
            asyncio.create_task(self._run_job(job), name=f"job-{job.name}") for job in self.jobs
        ]
        self.metrics.add(gauges.outbox_backlog(self._database))
        self.metrics.add(gauges.consumer_lag(self._nats, self.consumers))
        self.metrics.add(
            gauges.dead_letters_waiting(self._database, [s.durable for s in self.consumer_specs])
        )

    async def stop(self) -> None:
        for task in self._job_tasks:
            await stop_task(task)
        for consumer in self.consumers:
            await consumer.stop()
        if self.relay is not None:
            await self.relay.stop()
            if self._nats is not None and self._nats.connected:
                # Publish what the last requests committed; what is left waits for the next start.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.relay.drain(), 5)
        if self._nats is not None:
            await self._nats.close()
        if self._database is not None:
            await self._database.dispose()
        mark_process_dead()

    async def _run_job(self, job: PeriodicJob) -> None:
        # Jitter spreads replicas that started together.
        await asyncio.sleep(random.uniform(0, min(job.interval_seconds, 5.0)))
        while not cancel_requested():
            try:
                await job.run(self)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic job failed", extra={"job": job.name})
            await asyncio.sleep(job.interval_seconds)

    def required_checks(self) -> Mapping[str, ReadinessCheck]:
        return {"database": self.database.ping}

    def optional_checks(self) -> Mapping[str, ReadinessCheck]:
        # Without NATS the service still takes writes (the outbox keeps the events).
        checks: dict[str, ReadinessCheck] = {"nats": self.nats.ping}
        if self.relay is not None:
            checks["outbox"] = self.relay.check
        return checks

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        app.state.runtime = self
        app.state.database = self.database
        app.state.settings = self.settings
        try:
            yield
        finally:
            await self.stop()


async def _purge_idempotency_keys(runtime: ServiceRuntime) -> None:
    async with runtime.database.transaction() as session:
        await purge_expired_keys(session)


def create_service_app(
    runtime: ServiceRuntime,
    *,
    title: str,
    version: str,
    description: str,
    routers: Sequence[APIRouter],
    events: Sequence[EventSpec] = (),
) -> FastAPI:
    """The HTTP shell every service shares; its routes live under ``/api/v1``."""
    settings = runtime.settings
    configure_logging(runtime.service, settings.log_level)
    tracing.configure(runtime.service)
    app = FastAPI(
        title=title,
        version=version,
        description=description,
        lifespan=runtime.lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=tracing.fastapi_telemetry(),
    )
    install_problem_handlers(app)
    for router in routers:
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(dead_letters_router(runtime.service, _consumers_by_name), prefix=API_PREFIX)
    app.include_router(health_router(runtime.required_checks, runtime.optional_checks))
    app.add_api_route("/metrics", runtime.metrics, methods=["GET"], include_in_schema=False)
    asyncapi = asyncapi_document(title, version, events)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_json() -> dict[str, Any]:
        return asyncapi

    app.add_middleware(
        PrincipalMiddleware,
        secret=settings.internal_secret.get_secret_value().encode(),
        max_age=settings.internal_header_max_age_seconds,
        open_paths=OPEN_PATHS,
    )
    app.add_middleware(RequestContextMiddleware, access_log_enabled=settings.access_log)
    if settings.http_metrics:
        app.add_middleware(HttpMetricsMiddleware, route_of=AppRoutes(app, KIT_PATHS))
    if tracing.active():
        app.add_middleware(tracing.CallerContext)
    return app


def _consumers_by_name(request: Request) -> dict[str, EventConsumer]:
    runtime: ServiceRuntime = request.app.state.runtime
    return {consumer.spec.durable: consumer for consumer in runtime.consumers}
