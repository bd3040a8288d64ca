"""Composition root of the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from gateway import api
from gateway.settings import GatewaySettings
from shared.db import Database
from shared.health import ReadinessCheck, health_router
from shared.logs import RequestContextMiddleware, configure_logging
from shared.nats import NatsLink
from shared.problems import install_problem_handlers


def _service_check(client: httpx.AsyncClient, name: str, base_url: str) -> ReadinessCheck:
    async def check() -> None:
        try:
            response = await client.get(f"{base_url}/readyz")
        except httpx.HTTPError as exc:
            raise ConnectionError(f"{name} service unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise ConnectionError(f"{name} service not ready ({response.status_code})")

    return check


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    configure_logging("gateway", settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.database_url, pool_size=settings.db_pool_size)
        link = NatsLink(settings.nats_url, name="gateway")
        await link.start()
        client = httpx.AsyncClient(timeout=settings.upstream_timeout_seconds)
        app.state.settings = settings
        app.state.database = database
        app.state.nats = link
        app.state.http = client
        try:
            yield
        finally:
            await client.aclose()
            await link.close()
            await database.dispose()

    def checks() -> dict[str, ReadinessCheck]:
        checks: dict[str, ReadinessCheck] = {
            "database": app.state.database.ping,
            "nats": app.state.nats.ping,
        }
        for name, url in settings.upstreams().items():
            checks[name] = _service_check(app.state.http, name, url)
        return checks

    app = FastAPI(title="Seedbed API", version="1.0.0", lifespan=lifespan)
    install_problem_handlers(app)
    app.include_router(api.router, prefix="/api/v1")
    app.include_router(health_router(checks))
    app.add_middleware(RequestContextMiddleware, access_log_enabled=settings.access_log)
    return app
