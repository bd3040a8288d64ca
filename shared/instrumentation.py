"""The OpenTelemetry SDK and the official instrumentations, behind :mod:`shared.tracing`, which
imports this module only once tracing is switched on."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import aiohttp
from fastapi.telemetry import TelemetryConfig
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, get_current_span
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Scope


def exporters_from_environment() -> list[SpanExporter]:
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            # OTLP over HTTP/protobuf; it reads OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout).
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("", "none"):
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: this build exports 'otlp' or 'console'")
    return exporters


class NoStrayClientSpans(Sampler):
    """Drops a client span that starts a trace (the relay's sweep, a job's or a poll's SQL: every
    second, in every replica, telling nothing) and asks ``sampler`` about every other span."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any
    ) -> SamplingResult:
        kind = kwargs.get("kind", args[0] if args else None)
        if kind == SpanKind.CLIENT and not get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.DROP)
        return self.sampler.should_sample(parent_context, trace_id, name, *args, **kwargs)

    def get_description(self) -> str:
        return f"NoStrayClientSpans({self.sampler.get_description()})"


def provider_from_environment(service_name: str) -> TracerProvider:
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over this default;
    # a provider made without a sampler reads OTEL_TRACES_SAMPLER, the batch processor OTEL_BSP_*.
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=NoStrayClientSpans(TracerProvider().sampler),
    )
    for exporter in exporters_from_environment():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def instrument_clients(provider: TracerProvider) -> None:
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)


def client_trace_configs(provider: TracerProvider) -> list[aiohttp.TraceConfig]:
    return [create_trace_config(tracer_provider=provider)]


def uninstrument() -> None:
    """Undo the instrumentations that are process-wide (an instrumentor is a singleton: an
    engine made after this is instrumented again, with the provider in use then)."""
    for instrumentor in (HTTPXClientInstrumentor(), SQLAlchemyInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def fastapi_telemetry(provider: TracerProvider, exclude: Callable[[Scope], bool]) -> TelemetryConfig:
    # FastAPI's own spans know the matched route (contrib's matched every route again per request).
    return {
        "tracer_provider": provider,
        "tracing": True,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "exclude": exclude,
    }


def follows_caller(provider: TracerProvider) -> bool:
    """Whether the sampler decides as the caller did (``parentbased_*``, the SDK's default)."""
    sampler = provider.sampler
    if isinstance(sampler, NoStrayClientSpans):
        sampler = sampler.sampler
    return isinstance(sampler, ParentBased)


def instrument_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    # (skip_dep_check: the package pins SQLAlchemy below 2.1; its statement listeners work on 2.1)
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )
