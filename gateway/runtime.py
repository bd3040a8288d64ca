"""What the gateway process runs: its database, NATS link, clients, credential cache, limits."""

from __future__ import annotations

import httpx

from gateway.auth import Authenticator
from gateway.limits import RateLimiter
from gateway.oidc import OidcVerifier
from gateway.openapi import OpenApiAggregator
from gateway.proxy import Proxy
from gateway.settings import GatewaySettings
from shared.db import Database
from shared.nats import NatsLink
from shared.principal import Principal, PrincipalAuth


class GatewayRuntime:
    """Built with the app, started by its lifespan; the edge and the routes share it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.secret = settings.internal_secret.get_secret_value().encode()
        self.limiter = RateLimiter()
        self.proxy = Proxy(settings, self.secret)
        self._database: Database | None = None
        self._nats: NatsLink | None = None
        self._http: httpx.AsyncClient | None = None
        self._auth: Authenticator | None = None
        self._openapi: OpenApiAggregator | None = None

    @property
    def database(self) -> Database:
        assert self._database is not None, "the gateway has not started"
        return self._database

    @property
    def nats(self) -> NatsLink:
        assert self._nats is not None, "the gateway has not started"
        return self._nats

    @property
    def http(self) -> httpx.AsyncClient:
        """Composite calls, readiness probes, JWKS and service documents (not the pass-through)."""
        assert self._http is not None, "the gateway has not started"
        return self._http

    @property
    def auth(self) -> Authenticator:
        assert self._auth is not None, "the gateway has not started"
        return self._auth

    @property
    def openapi(self) -> OpenApiAggregator:
        assert self._openapi is not None, "the gateway has not started"
        return self._openapi

    def service_auth(self) -> PrincipalAuth:
        """Signs the gateway's own calls to services (documents) as staff, actor ``gateway``."""
        return PrincipalAuth(self.secret, Principal(role="staff", subject_id=None, actor="gateway"))

    async def start(self, own_openapi: OpenApiAggregator.OwnDocument) -> None:
        settings = self.settings
        self._database = Database(settings.database_url, pool_size=settings.db_pool_size)
        self._nats = NatsLink(settings.nats_url, name="gateway")
        await self._nats.start()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.upstream_timeout_seconds, connect=settings.upstream_connect_timeout_seconds
            ),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=4.0),
        )
        await self.proxy.start()
        oidc = OidcVerifier(settings, self._http) if settings.oidc_enabled else None
        self._auth = Authenticator(settings, self._database, self._nats, oidc)
        await self._auth.start()
        self._openapi = OpenApiAggregator(settings, self._http, self.service_auth(), own_openapi)
        await self._openapi.start()

    async def stop(self) -> None:
        if self._openapi is not None:
            await self._openapi.stop()
        if self._auth is not None:
            await self._auth.stop()
        await self.proxy.close()
        if self._http is not None:
            await self._http.aclose()
        if self._nats is not None:
            await self._nats.close()
        if self._database is not None:
            await self._database.dispose()
