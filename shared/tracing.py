"""OpenTelemetry traces: the SDK set up from the standard ``OTEL_*`` variables, FastAPI's own
server spans, the official client instrumentations (httpx, aiohttp for webhook deliveries,
SQLAlchemy), and what no official package does: server spans around the gateway's raw-ASGI
pass-through, and the W3C trace context carried through NATS for nats-py.

Off unless the environment asks for an exporter (``OTEL_TRACES_EXPORTER`` other than
``none``, or an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``; ``OTEL_SDK_DISABLED=true`` wins):
then nothing is instrumented and every hook here returns at its first test.

When on, the path of one request is one trace: the gateway's server span, the service's
server span (its child: the pass-through forwards the context, with no client span between)
and SQL, and the outbox row, which stores the context it was written in
(``outbox.trace_context``) so that the relay's publish span, sent later from another task,
joins the request's trace; the NATS message carries ``traceparent`` in its headers, and the
consumer's span continues from it (and its own outbox rows after it).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

if TYPE_CHECKING:
    import aiohttp
    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Probes and scrapes would be most of the spans and tell nothing.
EXCLUDED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_NO_SPAN: AbstractContextManager[Any] = contextlib.nullcontext()
# The headers the configured propagators read (OTEL_PROPAGATORS; W3C trace context and baggage).
_FIELDS = frozenset(field.encode("latin-1") for field in propagate.get_global_textmap().fields)
# Where FastAPI's exclude hands a left-out request's caller context to CallerContext.
_CALLER = "seedbed.unsampled_caller"

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None
_sdk: ModuleType | None = None


def _instrumentation() -> ModuleType:
    """shared.instrumentation (the SDK, exporters, instrumentations), imported on first use:
    a process with tracing off never pays for importing them at start."""
    global _sdk
    if _sdk is None:
        _sdk = importlib.import_module("shared.instrumentation")
    return _sdk


def enabled_by_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard variables ask for traces to be exported."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER")
    if exporter is not None:
        return exporter.strip().lower() not in ("", "none")
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(service: str) -> bool:
    """Turn tracing on for this process if the environment asks for it (once); True when on."""
    if _provider is not None:
        return True
    if not enabled_by_environment():
        return False
    use_provider(_instrumentation().provider_from_environment(f"seedbed-{service}"))
    return True


def use_provider(provider: TracerProvider) -> None:
    """Trace with ``provider`` from now on (configure does this; tests and benchmarks give one
    with an exporter of their own). Apps and engines made afterwards are instrumented."""
    global _provider, _tracer
    if _provider is provider:
        return
    if _provider is not None:
        disable()
    _provider = provider
    _tracer = provider.get_tracer("seedbed")
    _instrumentation().instrument_clients(provider)


def disable() -> None:
    """Stop instrumenting what is made from now on (tests and benchmarks switch it off)."""
    global _provider, _tracer
    if _provider is None:
        return
    _instrumentation().uninstrument()
    _provider = None
    _tracer = None


def active() -> bool:
    return _provider is not None


def fastapi_telemetry() -> TelemetryConfig | None:
    """``FastAPI(telemetry=...)``: server spans for the app's routes, named by route template,
    with this provider (None when off: FastAPI's default, which finds no provider).

    When the sampler follows the caller's decision (the default, and ``parentbased_*``), a request
    whose caller did not sample its trace gets no span: it would record nothing, yet FastAPI's
    telemetry would still do much of its work for it. :class:`CallerContext` carries the
    caller's context through it instead, so what it starts (SQL, outbox rows, their events)
    stays unsampled too."""
    if _provider is None:
        return None
    follows_caller: bool = _instrumentation().follows_caller(_provider)

    def exclude(scope: Scope) -> bool:
        if scope["path"] in EXCLUDED_PATHS:
            return True
        if not follows_caller:
            return False
        carrier = _carrier(scope)
        if "traceparent" not in carrier:
            return False
        caller = propagate.extract(carrier)
        context = trace.get_current_span(caller).get_span_context()
        if not context.is_valid or context.trace_flags.sampled:
            return False
        scope[_CALLER] = caller
        return True

    config: TelemetryConfig = _instrumentation().fastapi_telemetry(_provider, exclude)
    return config


class CallerContext:
    """ASGI middleware: the context of a caller that did not sample its trace, made current for
    the request FastAPI's telemetry left out for that reason (see :func:`fastapi_telemetry`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = scope.get(_CALLER)
        if caller is None:
            await self.app(scope, receive, send)
            return
        token = otel_context.attach(caller)
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


def _carrier(scope: Scope) -> dict[str, str]:
    """The request's headers that the configured propagators read."""
    return {
        name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"] if name in _FIELDS
    }


def client_trace_configs() -> list[aiohttp.TraceConfig]:
    """``aiohttp.ClientSession(trace_configs=...)`` for a session whose calls each deserve a
    client span (webhook deliveries); none when off."""
    if _provider is None:
        return []
    configs: list[aiohttp.TraceConfig] = _instrumentation().client_trace_configs(_provider)
    return configs


def forwarded_context() -> dict[str, str]:
    """The current trace context as headers (``traceparent``...) for a request forwarded on
    behalf of the current one; empty when off or outside a span."""
    carrier: dict[str, str] = {}
    if _provider is not None:
        propagate.inject(carrier)
    return carrier


def server_spans(app: ASGIApp, route_of: Callable[[str], str | None]) -> ASGIApp:
    """Server spans around raw ASGI (the gateway's pass-through), named by ``route_of``, with the
    stable HTTP attributes FastAPI's spans carry. Written on the API rather than with the
    official ASGI middleware: that one decodes every header several times and records its own
    metrics for each request, sampled or not, which cost the pass-through more than it did."""
    if _tracer is None:
        return app
    tracer = _tracer

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] != "http" or path in EXCLUDED_PATHS:
            await app(scope, receive, send)
            return
        carrier = _carrier(scope)
        method: str = scope["method"]
        route = route_of(path)
        attributes = {"http.request.method": method, "url.path": path, "url.scheme": scope["scheme"]}
        if route:
            attributes["http.route"] = route
        with tracer.start_as_current_span(
            f"{method} {route}" if route else method,
            context=propagate.extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            if not span.is_recording():
                await app(scope, receive, send)
                return

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
                await send(message)

            await app(scope, receive, send_status)

    return traced


def instrument_engine(engine: AsyncEngine) -> None:
    """A span per SQL statement of this engine (the official SQLAlchemy instrumentation)."""
    if _provider is not None:
        _instrumentation().instrument_engine(engine, _provider)


def stored_context() -> str | None:
    """The current trace context as text to store with an outbox row (None when off)."""
    if _provider is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, separators=(",", ":")) if carrier else None


def publishing(
    subject: str, event_id: str, stored: str | None, headers: dict[str, str]
) -> AbstractContextManager[Any]:
    """Around one NATS publish: a producer span in the stored context's trace, whose context
    goes into ``headers``."""
    if _provider is None or stored is None:
        return _NO_SPAN
    return _publish_span(subject, event_id, stored, headers)


@contextlib.contextmanager
def _publish_span(subject: str, event_id: str, stored: str, headers: dict[str, str]) -> Iterator[None]:
    assert _tracer is not None
    try:
        parent = propagate.extract(json.loads(stored))
    except ValueError:
        parent = None
    with _tracer.start_as_current_span(
        f"{subject} publish",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "publish",
            "messaging.destination.name": subject,
            "messaging.message.id": event_id,
        },
    ):
        propagate.inject(headers)
        yield


def continuing(stored: str | None) -> AbstractContextManager[Any]:
    """Around work done later for a traced event (a webhook delivery): the stored context is
    the current one, so the spans made inside (the HTTP client's) join its trace."""
    if _provider is None or stored is None:
        return _NO_SPAN
    return _attached(stored)


@contextlib.contextmanager
def _attached(stored: str) -> Iterator[None]:
    try:
        carrier = json.loads(stored)
    except ValueError:
        carrier = {}
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def consuming(
    subject: str, headers: Mapping[str, str] | None, consumer: str, event_id: str | None = None
) -> AbstractContextManager[Any]:
    """Around the handling of one NATS message: a consumer span continuing its headers' trace."""
    if _tracer is None:
        return _NO_SPAN
    attributes = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.destination.name": subject,
        "messaging.consumer.group.name": consumer,
    }
    if event_id:
        attributes["messaging.message.id"] = event_id
    return _tracer.start_as_current_span(
        f"{subject} process",
        context=propagate.extract(dict(headers or {})),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def log_ids() -> tuple[str, str] | None:
    """The current trace and span ids, as W3C hex, when there is a span (for log lines)."""
    if _provider is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format_trace_id(context.trace_id), format_span_id(context.span_id)
