"""One trace from an anchor's ``POST /api/v1/demand`` at the gateway, through the demand
service, its SQL and outbox, NATS, to the ``demand-matching`` consumer and the
``demand.match.found.v1`` outbox row it writes: the gateway and the demand service run in
this process (uvicorn on loopback ports) so that an in-memory exporter sees all their spans."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from services.demand import read_models
from services.demand.app import create_app as create_demand
from services.demand.settings import DemandSettings
from shared import tracing
from shared.db import Database
from shared.outbox import outbox_table
from shared.testing.apps import TEST_SECRET
from shared.testing.databases import DatabaseFactory, alembic_prepare
from shared.testing.nats_server import NatsServer
from shared.testing.polling import wait_until
from shared.testing.ports import server_port
from tests.conftest import line_body

ROOT = Path(__file__).resolve().parents[1]
STAFF_KEY = "sbk_" + secrets.token_urlsafe(32)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


@contextlib.asynccontextmanager
async def serving(app: FastAPI, port: int) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def by_trace(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [span for span in spans if span.context.trace_id == trace_id]


async def test_one_trace_from_the_gateway_through_nats_to_the_matching_consumer(
    spans: InMemorySpanExporter, own_nats_server: NatsServer, database_factory: DatabaseFactory
) -> None:
    demand_url = await database_factory.create(
        "sqlite", "demand", alembic_prepare(ROOT / "services" / "demand")
    )
    gateway_url = await database_factory.create("sqlite", "gateway", alembic_prepare(ROOT / "gateway"))
    common = {"nats_url": own_nats_server.url, "internal_secret": TEST_SECRET, "environment": "test"}
    demand = create_demand(DemandSettings(database_url=demand_url, pipeline_publisher=False, **common))
    demand_port = server_port()
    gateway = create_gateway(
        GatewaySettings(
            database_url=gateway_url,
            demand_url=f"http://127.0.0.1:{demand_port}",
            bootstrap_staff_key=STAFF_KEY,
            **common,
        )
    )
    # The demand service's copy of an incubated enterprise that fits the line below.
    enterprise_id = str(uuid.uuid4())
    database = Database(demand_url)
    async with database.transaction() as session:
        await read_models.store_enterprise(
            session,
            {
                "enterprise_id": enterprise_id,
                "version": 1,
                "name": "Traced Meals CIC",
                "stage": "incubating",
                "postcode": "LS6 2QR",
                "cpv_codes": ["55300000"],
                "vcse": True,
                "employees": 4,
                "turnover_pence": 25_000_000,
            },
        )

    async with serving(demand, demand_port), serving(gateway, server_port()) as url:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {STAFF_KEY}"}, timeout=60
        ) as staff:
            anchor = (
                await staff.post("/api/v1/anchors", json={"name": "Traced University", "type": "university"})
            ).json()
            made = await staff.post(
                "/api/v1/api-keys", json={"role": "anchor", "subject_id": anchor["id"], "name": "traced"}
            )
            anchor_key = made.json()["key"]
        spans.clear()
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {anchor_key}"}, timeout=60
        ) as http:
            answer = await http.post("/api/v1/demand", json=line_body(anchor["id"], "Traced school meals"))
        assert answer.status_code == 201, answer.text
        line_id = answer.json()["id"]

        async def match_row() -> sa.Row | None:
            async with database.transaction(write=False) as session:
                return (
                    await session.execute(
                        sa.select(outbox_table).where(outbox_table.c.subject == "demand.match.found.v1")
                    )
                ).first()

        await wait_until(match_row, timeout=60, interval=0.1)
        row = await match_row()
        assert row is not None
        assert json.loads(row.body)["data"] == json.loads(row.body)["data"] | {
            "demand_id": line_id,
            "enterprise_id": enterprise_id,
        }

        def consumer_span() -> ReadableSpan | None:
            return next(
                (
                    s
                    for s in spans.get_finished_spans()
                    if s.kind == SpanKind.CONSUMER
                    and s.attributes.get("messaging.consumer.group.name") == "demand-matching"
                ),
                None,
            )

        await wait_until(consumer_span, timeout=30)
    await database.dispose()

    finished = list(spans.get_finished_spans())
    gateway_server = next(
        s for s in finished if s.kind == SpanKind.SERVER and s.name == "POST /api/v1/demand"
    )
    trace = by_trace(finished, gateway_server.context.trace_id)
    kinds = {(s.kind, s.name) for s in trace}
    # The service's server span (FastAPI) is the child of the gateway's: the pass-through
    # forwards its server span's context, with no client span of its own in between.
    servers = {s.context.span_id: s for s in trace if s.kind == SpanKind.SERVER}
    assert any(s.parent is not None and s.parent.span_id in servers for s in servers.values()), kinds
    # The service's SQL (the SQLAlchemy instrumentation), in the same trace.
    assert any(s.attributes.get("db.system") or s.attributes.get("db.system.name") for s in trace), kinds
    # The relay's publish, joined to the request's trace through the outbox row.
    publish = next(
        s for s in trace if s.kind == SpanKind.PRODUCER and s.name == "demand.item.published.v1 publish"
    )
    # The matching consumer, continuing from the message headers, after the publish.
    consumer = consumer_span()
    assert consumer is not None
    assert consumer.context.trace_id == gateway_server.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == publish.context.span_id
    # Its match.found row stored the consumer's context: its own publish continues the trace.
    stored = json.loads(row.trace_context)["traceparent"]
    assert stored.split("-")[1] == format_trace_id(gateway_server.context.trace_id)
    assert stored.split("-")[2] == format_span_id(consumer.context.span_id)
