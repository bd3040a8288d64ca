"""A webhook delivery joins the trace of the event it delivers: the trace context the event
came with (its NATS headers) is kept with it, and the dispatcher's POST (the aiohttp client's
span, and the receiver's ``traceparent``) continues it, however much later it is sent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.tests.conftest import GatewayFactory, client_of, wait_until
from gateway.tests.test_webhooks import FAST, ITEM, demand_line, subscribe
from gateway.tests.webhook_receiver import Receiver, make_service_streams
from shared import tracing
from shared.events import CONTENT_TYPE, event_source, new_event


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiving = await Receiver().start()
    yield receiving
    await receiving.stop()


@pytest.fixture
async def streams(nats_url: str) -> str:
    await make_service_streams(nats_url)
    return nats_url


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


async def test_a_webhook_delivery_continues_the_trace_of_its_event(
    spans: InMemorySpanExporter, gateway_app: GatewayFactory, streams: str, receiver: Receiver
) -> None:
    trace_id = uuid.uuid4().hex
    parent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    async with gateway_app(**FAST) as app, client_of(app) as http:
        await subscribe(http, receiver.url, ["demand.item.*"])
        event = new_event(ITEM, demand_line(), source=event_source("demand"))
        nc = await nats.connect(streams)
        try:
            headers = {"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE, "traceparent": parent}
            await nc.jetstream().publish(ITEM, event.to_bytes(), headers=headers)
        finally:
            await nc.close()
        await wait_until(lambda: receiver.received, timeout=15)
    [got] = receiver.received
    assert got.headers["traceparent"].split("-")[1] == trace_id
    traced = [s for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
    fan_out = next(s for s in traced if s.kind == SpanKind.CONSUMER)
    assert fan_out.attributes["messaging.consumer.group.name"] == "gateway-webhooks"
    post = next(s for s in traced if s.kind == SpanKind.CLIENT and s.name.startswith("POST"))
    assert post.parent is not None and post.parent.span_id == fan_out.context.span_id
