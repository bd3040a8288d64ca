"""Composition root of the gateway.

Requests meet, outermost first: the request-id and access-log middleware, then
the edge (CORS, authentication, rate and body limits). A request for a service
takes that short chain straight from the server and the edge forwards it; the
gateway's own routes (keys, ``/me``, composite views, documents, health) go
through FastAPI, whose stack holds the same two middlewares.

Adding a router of the gateway's own: put it in ``ROUTERS`` (``gateway.integrators``
holds webhooks, the event stream and the AsyncAPI document); the route table
(``gateway.routes``) must send its paths here, the edge authenticates them
(``shared.principal.PrincipalDep`` and ``StaffDep`` work in them, the credential is
``gateway.api.CredentialDep``), and ``app.state.nats``, ``app.state.database`` and
``app.state.runtime`` are there for them. The edge passes a streaming answer (SSE)
through unbuffered, and its limits apply per request, so a long stream is not cut.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway import api, dashboard, integrators
from gateway.api_docs import install_api_docs
from gateway.edge import EdgeMiddleware
from gateway.metrics import route_of
from gateway.pages import routes as pages
from gateway.routes import GATEWAY, SERVICES, owner_of
from gateway.runtime import WEBHOOKS_CONSUMER, GatewayRuntime
from gateway.settings import GatewaySettings
from shared import tracing
from shared.dead_letters import dead_letters_router
from shared.health import ReadinessCheck, health_router
from shared.inbox import EventConsumer
from shared.logs import RequestContextMiddleware, configure_logging
from shared.metrics import HttpMetricsMiddleware
from shared.problems import install_problem_handlers

API_PREFIX = "/api/v1"
ROUTERS: list[APIRouter] = [api.router, dashboard.router, integrators.router]


class GatewayApp(FastAPI):
    """FastAPI for the gateway's own routes, with the pass-through path in front of it.

    A request for a service never enters FastAPI: no routing, no per-request telemetry
    check, no middleware stack of its own; only the request context and the edge."""

    pass_through: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.pass_through is not None and owner_of(scope["path"]) in SERVICES:
            await self.pass_through(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


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
    tracing.configure(GATEWAY)
    runtime = GatewayRuntime(settings)

    def own_document() -> dict[str, Any]:
        return get_openapi(title=app.title, version=app.version, routes=app.routes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start(own_document)
        app.state.settings = settings
        app.state.runtime = runtime
        app.state.database = runtime.database
        app.state.nats = runtime.nats
        app.state.http = runtime.http
        try:
            yield
        finally:
            await runtime.stop()

    def required_checks() -> dict[str, ReadinessCheck]:
        # Without its database the gateway can authenticate no API key: nothing to serve.
        return {"database": runtime.database.ping}

    def optional_checks() -> dict[str, ReadinessCheck]:
        # Degraded, not unready: without NATS only the event stream and webhooks wait, and a
        # service that is down answers 503 for its own routes while the others serve; taking
        # this pod out would fix neither.
        checks: dict[str, ReadinessCheck] = {"nats": runtime.nats.ping}
        for name, url in settings.upstreams().items():
            checks[name] = _service_check(runtime.http, name, url)
        return checks

    app = GatewayApp(
        title="Seedbed API",
        version="1.0.0",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        telemetry=tracing.fastapi_telemetry(),
    )
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(dead_letters_router(GATEWAY, _webhook_consumers), prefix=API_PREFIX)
    app.include_router(health_router(required_checks, optional_checks))
    # The scrape, like the probes, is for the cluster: the edge lets it through (not under /api/v1).
    app.add_api_route("/metrics", runtime.metrics, methods=["GET"], include_in_schema=False)
    pages.install(app, settings)  # /, /pipeline, /anchors...: HTML for people (gateway.pages)

    async def openapi_json() -> JSONResponse:
        return JSONResponse(await runtime.openapi.document())

    for prefix in ("", API_PREFIX):
        app.add_api_route(f"{prefix}/openapi.json", openapi_json, include_in_schema=False)
    install_api_docs(app, API_PREFIX)

    # The gateway's own routes: request context, then the edge, inside FastAPI's stack.
    app.add_middleware(EdgeMiddleware, runtime=runtime)
    app.add_middleware(RequestContextMiddleware, access_log_enabled=settings.access_log)
    if settings.http_metrics:
        app.add_middleware(HttpMetricsMiddleware, route_of=route_of)
    if tracing.active():
        app.add_middleware(tracing.CallerContext)
    # Everything for a service: the same, straight from the server.
    pass_through: ASGIApp = tracing.server_spans(
        RequestContextMiddleware(
            EdgeMiddleware(super(GatewayApp, app).__call__, runtime=runtime),
            access_log_enabled=settings.access_log,
        ),
        route_of,
    )
    if settings.http_metrics:
        pass_through = HttpMetricsMiddleware(pass_through, route_of=route_of)
    if settings.trusted_proxies:
        # Outermost on both paths: the client address every limit sees is the one a trusted
        # proxy reported, and nobody else's X-Forwarded-For counts.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
        pass_through = ProxyHeadersMiddleware(pass_through, trusted_hosts=settings.trusted_proxies)
    app.pass_through = pass_through
    return app


def _webhook_consumers(request: Request) -> dict[str, EventConsumer]:
    runtime: GatewayRuntime = request.app.state.runtime
    return {WEBHOOKS_CONSUMER: runtime.webhooks_consumer}
