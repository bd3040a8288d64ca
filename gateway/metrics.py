"""The gateway's own metrics: SSE streams, rate-limit refusals, webhook deliveries, and the
route template of a pass-through request (the kit's HTTP metrics label requests with it)."""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client import Counter, Gauge

from gateway.models import webhook_subscriptions
from gateway.routes import PUBLIC_ROUTES
from shared.db import Database
from shared.metrics import Refresher, RouteTable

OWN_PATHS = ("/metrics", "/healthz", "/readyz", "/openapi.json", "/docs", "/api/v1/docs")
route_of = RouteTable([*(route.path for route in PUBLIC_ROUTES), *OWN_PATHS])
"""The route template a path fits, None for none (labelled ``unmatched``)."""

SSE_STREAMS_OPEN = Gauge(
    "seedbed_sse_streams_open", "Event streams (SSE) open on this gateway.", multiprocess_mode="livesum"
)
RATE_LIMIT_REFUSALS = Counter(
    "seedbed_rate_limit_refusals", "Requests refused with 429, by policy (api or public).", ["policy"]
)
WEBHOOK_ATTEMPTS = Counter(
    "seedbed_webhook_attempts",
    "Webhook delivery attempts, by outcome (delivered: a 2xx; failed: anything else).",
    ["outcome"],
)
WEBHOOK_DELIVERIES_FAILED = Counter(
    "seedbed_webhook_deliveries_failed", "Webhook deliveries given up after the whole retry schedule."
)
WEBHOOK_ENDPOINTS_DISABLED = Gauge(
    "seedbed_webhook_endpoints_disabled",
    "Webhook subscriptions disabled after failing deliveries in a row.",
    multiprocess_mode="mostrecent",
)
WEBHOOK_ENDPOINTS_DISABLED_TOTAL = Counter(
    "seedbed_webhook_endpoint_disablements", "Times a webhook subscription was disabled for failing."
)


def disabled_endpoints(database: Database) -> Refresher:
    query = (
        sa.select(sa.func.count())
        .select_from(webhook_subscriptions)
        .where(webhook_subscriptions.c.active.is_(False))
    )

    async def refresh() -> None:
        async with database.transaction(write=False) as session:
            WEBHOOK_ENDPOINTS_DISABLED.set(await session.scalar(query) or 0)

    return refresh
