"""The observability kit without a running system: route templates as labels, the multiprocess
mode of prometheus-client, the OTEL_* switch, and trace ids in the JSON logs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from shared import tracing
from shared.instrumentation import follows_caller, provider_from_environment
from shared.logs import JsonFormatter
from shared.metrics import AppRoutes, HttpMetricsMiddleware, RouteTable

ROOT = Path(__file__).resolve().parents[2]


def test_a_path_is_labelled_with_the_template_it_fits_literal_segments_first() -> None:
    table = RouteTable(["/api/v1/mentors/{id}", "/api/v1/mentors/recommendations", "/api/v1/mentors"])
    assert table("/api/v1/mentors/recommendations") == "/api/v1/mentors/recommendations"
    assert table("/api/v1/mentors/4b1c") == "/api/v1/mentors/{id}"
    assert table("/api/v1/mentors") == "/api/v1/mentors"
    assert table("/api/v1/mentors/4b1c/slots") is None
    assert table("/") is None


async def test_requests_are_counted_by_the_template_of_an_included_router() -> None:
    router = APIRouter()

    @router.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app = FastAPI()
    app.include_router(router, prefix="/api/v1")
    app.add_middleware(HttpMetricsMiddleware, route_of=AppRoutes(app))

    def count(route: str, status: str) -> float:
        labels = {"method": "GET", "route": route, "status": status}
        return REGISTRY.get_sample_value("seedbed_http_requests_total", labels) or 0.0

    before = count("/api/v1/things/{thing_id}", "200"), count("unmatched", "404")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http:
        for n in range(3):
            assert (await http.get(f"/api/v1/things/{n}")).status_code == 200
        assert (await http.get("/api/v1/nothing/here")).status_code == 404
    assert count("/api/v1/things/{thing_id}", "200") - before[0] == 3
    assert count("unmatched", "404") - before[1] == 1


def test_several_workers_are_added_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """Two processes count into PROMETHEUS_MULTIPROC_DIR; a third scrapes the sum."""
    count = textwrap.dedent(
        """
        import sys
        from shared.metrics import HTTP_REQUESTS, OUTBOX_BACKLOG
        for _ in range(int(sys.argv[1])):
            HTTP_REQUESTS.labels("GET", "/api/v1/things", "200").inc()
        OUTBOX_BACKLOG.set(int(sys.argv[1]))
        """
    )
    scrape = textwrap.dedent(
        """
        from prometheus_client import generate_latest
        from shared.metrics import MetricsEndpoint
        print(generate_latest(MetricsEndpoint().registry()).decode())
        """
    )
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in ("2", "5"):
        subprocess.run([sys.executable, "-c", count, n], env=env, cwd=ROOT, check=True)
    text = subprocess.run(
        [sys.executable, "-c", scrape], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    labels = (("method", "GET"), ("route", "/api/v1/things"), ("status", "200"))
    assert samples[("seedbed_http_requests_total", labels)] == 7
    assert samples[("seedbed_outbox_backlog", ())] == 5  # the most recent write, not a sum


def test_tracing_is_off_unless_the_standard_variables_ask_for_an_exporter() -> None:
    assert not tracing.enabled_by_environment({})
    assert not tracing.enabled_by_environment({"OTEL_SERVICE_NAME": "x"})
    assert tracing.enabled_by_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.enabled_by_environment({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.enabled_by_environment({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.enabled_by_environment({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.enabled_by_environment(
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    )


def test_off_the_hooks_do_nothing_and_logs_carry_no_trace() -> None:
    assert not tracing.active()
    assert tracing.stored_context() is None
    headers: dict[str, str] = {}
    with tracing.publishing("demand.item.published.v1", "id", '{"traceparent": "x"}', headers):
        pass
    assert headers == {}
    line = json.loads(JsonFormatter("test").format(logging.LogRecord("t", 20, "", 0, "hello", (), None)))
    assert "trace_id" not in line


def test_a_log_line_inside_a_span_carries_its_trace_and_span_ids() -> None:
    provider = TracerProvider()
    tracing.use_provider(provider)
    try:
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("work") as span:
            record = logging.LogRecord("t", 20, "", 0, "inside", (), None)
            line = json.loads(JsonFormatter("test").format(record))
            stored = tracing.stored_context()
        context = span.get_span_context()
        assert line["trace_id"] == f"{context.trace_id:032x}"
        assert line["span_id"] == f"{context.span_id:016x}"
        assert stored is not None and json.loads(stored)["traceparent"].split("-")[1] == line["trace_id"]
    finally:
        tracing.disable()


def test_sql_outside_any_trace_starts_none_but_sql_inside_a_request_is_kept(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    provider = provider_from_environment("seedbed-test")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
        pass  # a background poll's query
    with (
        tracer.start_as_current_span("GET /api/v1/things", kind=SpanKind.SERVER),
        tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT),
    ):
        pass
    assert [(s.name, s.kind) for s in exporter.get_finished_spans()] == [
        ("SELECT", SpanKind.CLIENT),
        ("GET /api/v1/things", SpanKind.SERVER),
    ]
    assert all(s.parent is not None for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT)


async def test_a_raw_asgi_server_span_continues_the_caller_and_is_what_a_forwarded_request_carries() -> None:
    forwarded: list[dict[str, str]] = []

    async def app(scope, receive, send) -> None:
        forwarded.append(tracing.forwarded_context())
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        traced = tracing.server_spans(app, RouteTable(["/api/v1/things/{id}"]))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=traced), base_url="http://gw") as http:
            for flags in ("01", "00"):
                await http.get(
                    "/api/v1/things/7?x=1", headers={"traceparent": f"00-{caller}-00f067aa0ba902b7-{flags}"}
                )
            await http.get("/healthz")
    finally:
        tracing.disable()
    (span,) = exporter.get_finished_spans()  # the caller's unsampled request records nothing
    assert (span.name, span.kind, span.parent and span.parent.span_id) == (
        "GET /api/v1/things/{id}",
        SpanKind.SERVER,
        0x00F067AA0BA902B7,
    )
    assert span.attributes is not None and span.attributes["http.route"] == "/api/v1/things/{id}"
    assert span.attributes["url.path"] == "/api/v1/things/7"
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["http.response.status_code"] == 503
    assert not span.status.is_ok
    # Each forwarded request carries its server span's context, sampled or not; /healthz has none.
    assert [f["traceparent"].split("-")[1] for f in forwarded[:2]] == [caller, caller]
    assert forwarded[0]["traceparent"] == f"00-{caller}-{span.context.span_id:016x}-01"
    assert forwarded[1]["traceparent"].endswith("-00") and forwarded[2] == {}


def _traced_app(stored: list[str | None], provider: TracerProvider) -> FastAPI:
    """A FastAPI app traced as the kit builds one; its route stores the context an outbox row would
    keep and makes a client span, as SQL would."""
    app = FastAPI(telemetry=tracing.fastapi_telemetry())
    tracer = provider.get_tracer("test")

    @app.get("/api/v1/things/{id}")
    async def thing(id: str) -> dict[str, str]:
        stored.append(tracing.stored_context())
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
            pass
        return {"id": id}

    app.add_middleware(tracing.CallerContext)
    return app


@pytest.mark.parametrize("follows_caller", [True, False])
async def test_a_request_its_caller_did_not_sample_records_nothing_and_passes_that_on(
    follows_caller: bool,
) -> None:
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=None if follows_caller else ALWAYS_ON)  # None: parent-based
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    stored: list[str | None] = []
    try:
        app = _traced_app(stored, provider)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
            for flags in ("00", "01"):
                answer = await http.get(
                    "/api/v1/things/7", headers={"traceparent": f"00-{caller}-00f067aa0ba902b7-{flags}"}
                )
                assert answer.status_code == 200
    finally:
        tracing.disable()
    servers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    first = json.loads(stored[0] or "{}")["traceparent"]
    if follows_caller:
        # Unsampled: no span made at all (the caller's own context is current), and the outbox
        # row keeps it, so the relay's publish and the consumer downstream record nothing either.
        (server,) = servers
        assert first == f"00-{caller}-00f067aa0ba902b7-00"
        assert len(exporter.get_finished_spans()) == 2  # the sampled request's server and SQL spans
    else:
        # A sampler that does not follow the caller decides for itself: both requests recorded.
        assert len(servers) == 2 and first == f"00-{caller}-{servers[0].context.span_id:016x}-01"
        server = servers[1]
    assert server.name == "GET /api/v1/things/{id}" and server.parent is not None
    assert server.parent.span_id == 0x00F067AA0BA902B7
    assert json.loads(stored[1] or "{}")["traceparent"] == f"00-{caller}-{server.context.span_id:016x}-01"


def test_the_configured_sampler_follows_the_caller_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    assert follows_caller(provider_from_environment("seedbed-test"))  # the SDK's parentbased_always_on
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    assert follows_caller(provider_from_environment("seedbed-test"))
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    assert not follows_caller(provider_from_environment("seedbed-test"))
