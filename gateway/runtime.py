"""What the gateway process runs: its database, NATS link, clients, credential cache, limits."""

from __future__ import annotations

import asyncio

import httpx

from gateway.asyncapi import AsyncApiAggregator
from gateway.auth import Authenticator
from gateway.deliveries import Dispatcher
from gateway.event_stream import EVENTS_STREAM, EventStreamKeeper
from gateway.limits import Limits, RateLimiter, SharedRateLimiter
from gateway.metrics import disabled_endpoints
from gateway.oidc import OidcVerifier
from gateway.openapi import OpenApiAggregator
from gateway.proxy import Proxy
from gateway.settings import GatewaySettings
from gateway.sse import StreamCounter
from gateway.webhooks import SecretBox, WebhookFanOut
from shared import gauges, tracing
from shared.db import Database
from shared.inbox import ConsumerSpec, EventConsumer
from shared.metrics import MetricsEndpoint, mark_process_dead, track_pool
from shared.nats import NatsLink
from shared.principal import Principal, PrincipalAuth
from shared.tasks import stop_task

WEBHOOKS_CONSUMER = "gateway-webhooks"
# A fan-out that fails (the database is down) is retried for about as long as an outage
# may last before the event is dead-lettered: nak delays grow to 30 s.
WEBHOOKS_MAX_DELIVER = 100


class GatewayRuntime:
    """Built with the app, started by its lifespan; the edge and the routes share it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.secret = settings.internal_secret.get_secret_value().encode()
        # Replaced by the shared limiter at start when the settings ask for it (gateway.limits).
        self.limiter: Limits = RateLimiter()
        # Addresses that failed authentication on this replica lately (until when): only their
        # requests pay a look at the failure count before authenticating. Another replica's
        # first refusal of an address costs it one unlooked check (answered 429 if it fails).
        self.auth_failures_seen: dict[str, float] = {}
        self.proxy = Proxy(settings, self.secret)
        self._database: Database | None = None
        self._nats: NatsLink | None = None
        self._http: httpx.AsyncClient | None = None
        self._auth: Authenticator | None = None
        self._openapi: OpenApiAggregator | None = None
        self._asyncapi: AsyncApiAggregator | None = None
        self._event_stream: EventStreamKeeper | None = None
        self._dispatcher: Dispatcher | None = None
        self._webhooks_consumer: EventConsumer | None = None
        self._consumer_starter: asyncio.Task[None] | None = None
        self.secret_box = SecretBox(settings)
        self.sse_streams = StreamCounter(settings.sse_max_streams_per_credential)
        self.metrics = MetricsEndpoint()

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

    @property
    def asyncapi(self) -> AsyncApiAggregator:
        assert self._asyncapi is not None, "the gateway has not started"
        return self._asyncapi

    @property
    def event_stream(self) -> EventStreamKeeper:
        assert self._event_stream is not None, "the gateway has not started"
        return self._event_stream

    @property
    def dispatcher(self) -> Dispatcher:
        assert self._dispatcher is not None, "the gateway has not started"
        return self._dispatcher

    @property
    def webhooks_consumer(self) -> EventConsumer:
        assert self._webhooks_consumer is not None, "the gateway has not started"
        return self._webhooks_consumer

    def service_auth(self) -> PrincipalAuth:
        """Signs the gateway's own calls to services (documents) as staff, actor ``gateway``."""
        return PrincipalAuth(self.secret, Principal(role="staff", subject_id=None, actor="gateway"))

    async def start(self, own_openapi: OpenApiAggregator.OwnDocument) -> None:
        settings = self.settings
        self._database = Database(settings.database_url, pool_size=settings.db_pool_size)
        track_pool(self._database.engine)
        tracing.instrument_engine(self._database.engine)
        self._nats = NatsLink(
            settings.nats_url,
            name="gateway",
            ping_interval=settings.nats_ping_interval_seconds,
            max_outstanding_pings=settings.nats_max_outstanding_pings,
        )
        await self._nats.start()
        if settings.shared_rate_limits:
            self.limiter = SharedRateLimiter(self._nats, replicas=settings.stream_replicas)
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
        self._asyncapi = AsyncApiAggregator(settings, self._http, self.service_auth())
        await self._asyncapi.start()
        await self._start_integrators()
        assert self._webhooks_consumer is not None
        self.metrics.add(gauges.consumer_lag(self._nats, [self._webhooks_consumer]))
        self.metrics.add(gauges.dead_letters_waiting(self._database, [WEBHOOKS_CONSUMER]))
        self.metrics.add(disabled_endpoints(self._database))

    async def _start_integrators(self) -> None:
        """SEEDBED_EVENTS, the webhook dispatcher, and the fan-out consumer once the stream exists
        (started earlier, the consumer would back off for seconds while the stream is made)."""
        assert self._nats is not None and self._database is not None
        self._event_stream = EventStreamKeeper(self.settings, self._nats, self._restart_webhooks_consumer)
        await self._event_stream.start()
        self._dispatcher = Dispatcher(self.settings, self._database, self.secret_box)
        await self._dispatcher.start()
        self._webhooks_consumer = EventConsumer(
            self._database,
            self._nats,
            ConsumerSpec(
                durable=WEBHOOKS_CONSUMER,
                stream=EVENTS_STREAM,
                subjects=(),
                handler=WebhookFanOut(self._dispatcher.poke),
                max_deliver=WEBHOOKS_MAX_DELIVER,
            ),
        )
        keeper, consumer = self._event_stream, self._webhooks_consumer

        async def start_consumer() -> None:
            await keeper.ready.wait()
            await consumer.start()

        self._consumer_starter = asyncio.create_task(start_consumer(), name="webhooks-consumer-start")

    async def _restart_webhooks_consumer(self) -> None:
        """The stream was made anew and the durable consumer lost with it: make it again (the
        kit's consumer takes a deleted consumer's answers for an empty stream). The inbox keeps
        the events sourced a second time from being fanned out twice."""
        consumer = self._webhooks_consumer
        if consumer is not None and self._consumer_starter is not None and self._consumer_starter.done():
            await consumer.stop()
            await consumer.start()

    async def stop(self) -> None:
        await stop_task(self._consumer_starter)
        if self._webhooks_consumer is not None:
            await self._webhooks_consumer.stop()
        if self._dispatcher is not None:
            await self._dispatcher.stop()
        if self._event_stream is not None:
            await self._event_stream.stop()
        if self._asyncapi is not None:
            await self._asyncapi.stop()
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
        mark_process_dead()
