"""The cost of observability (issue 14): the same gateway + demand service four ways, in one run:

- ``off``: no per-request HTTP metrics (SEEDBED_HTTP_METRICS=false), no tracing;
- ``metrics``: as deployed by default (per-request metrics on, tracing off);
- ``tracing``: metrics on, and traces exported over OTLP/HTTP (OTEL_TRACES_EXPORTER=otlp) to a
  loopback sink in this process, which answers every export with 200; every trace sampled;
- ``sampled``: as ``tracing``, with the head sampling docs/operations.md recommends for
  production (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ``OTEL_TRACES_SAMPLER_ARG=0.1``).

Two routes: the pass-through ``GET /api/v1/demand/imports/template.csv`` (no database) and the
write ``POST /api/v1/demand`` (a public line: SQL, an outbox row, its publish and the
demand-matching consumer). Each variant has its own processes, NATS and databases; the four
are measured in turn in every round, and the figures are the medians of the rounds, as ratios
against ``off``. Throughput is the target; the gateway's and the service's CPU per request
(from /proc) are the less noisy figure on a shared machine. Targets: metrics < 5%, tracing
< 15%.

    python -m bench.observability [--seconds 3] [--rounds 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import median

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bench.gateway import cpu_seconds, start, wait_ready
from shared.migrations import upgrade
from shared.testing.nats_server import NatsServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = secrets.token_urlsafe(48)
VARIANTS = ("off", "metrics", "tracing", "sampled")
READ_PATH = "/api/v1/demand/imports/template.csv"
WRITE_PATH = "/api/v1/demand"


# -- the load generator (run in its own process) -----------------------------------------------


async def _connection(host: str, port: int, request: bytes, deadline: float, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    errors = 0
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            errors += status >= 300
    finally:
        writer.close()
    return errors


async def _load(
    url: str, method: str, path: str, headers: dict, body: str, connections: int, seconds: float
) -> dict:
    host, port = url.removeprefix("http://").split(":")
    raw = body.encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    if raw:
        lines += ["Content-Type: application/json", f"Content-Length: {len(raw)}"]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + raw
    latencies: list[float] = []
    started = time.perf_counter()
    errors = await asyncio.gather(
        *(_connection(host, int(port), request, started + seconds, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "errors": sum(errors), "rps": len(latencies) / elapsed}


def run_load(
    url: str, method: str, path: str, headers: dict, body: str, connections: int, seconds: float
) -> dict:
    spec = json.dumps([url, method, path, headers, body, connections, seconds])
    out = subprocess.run(
        [sys.executable, "-m", "bench.observability", "--loadgen", spec],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# -- the floor: what one recorded span costs, in this process -------------------------------------


def span_floor(count: int = 5000) -> tuple[float, float]:
    """Microseconds to build one recorded server span (start, eight attributes, end, handed to a
    batch processor) and to encode it for OTLP: what tracing costs per span whatever the path."""
    attributes = {
        "http.request.method": "GET",
        "url.path": READ_PATH,
        "url.scheme": "http",
        "http.route": READ_PATH,
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "network.protocol.version": "1.1",
        "client.address": "127.0.0.1",
    }

    def build(provider: TracerProvider) -> float:
        tracer = provider.get_tracer("bench")
        started = time.perf_counter()
        for _ in range(count):
            with tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes=attributes) as span:
                span.set_attribute("http.response.status_code", 200)
        return (time.perf_counter() - started) / count * 1e6

    batched = TracerProvider()
    batched.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    build_us = build(batched)
    batched.shutdown()
    memory = InMemorySpanExporter()
    kept = TracerProvider()
    kept.add_span_processor(SimpleSpanProcessor(memory))
    build(kept)
    spans = memory.get_finished_spans()
    started = time.perf_counter()
    for first in range(0, len(spans), 512):  # the batch processor's default export size
        encode_spans(spans[first : first + 512]).SerializeToString()
    encode_us = (time.perf_counter() - started) / len(spans) * 1e6
    return build_us, encode_us


# -- the OTLP sink ------------------------------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


# -- one variant: NATS, the demand service and the gateway ---------------------------------------


@dataclass
class Variant:
    name: str
    root: Path
    env: dict[str, str]
    nats: NatsServer | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    key: str = ""
    line: str = ""

    def start(self) -> None:
        self.root.mkdir(parents=True)
        self.nats = NatsServer(self.root / "nats")
        self.nats.start()
        databases = {name: f"sqlite+aiosqlite:///{self.root / name}.db" for name in ("demand", "gateway")}
        upgrade(ROOT / "services" / "demand", databases["demand"])
        upgrade(ROOT / "gateway", databases["gateway"])
        staff_key = "sbk_" + secrets.token_urlsafe(32)
        self.urls = {name: f"http://127.0.0.1:{free_port()}" for name in ("demand", "gateway")}
        env = self.env | {
            "NATS_URL": self.nats.url,
            "SEEDBED_BOOTSTRAP_STAFF_KEY": staff_key,
            "DEMAND_DATABASE_URL": databases["demand"],
            "GATEWAY_DATABASE_URL": databases["gateway"],
            "GATEWAY_DEMAND_URL": self.urls["demand"],
        }
        for name, app in (
            ("demand", "services.demand.app:create_app"),
            ("gateway", "gateway.app:create_app"),
        ):
            port = int(self.urls[name].rsplit(":", 1)[1])
            self.processes[name] = start(
                app, port, env | {"OTEL_SERVICE_NAME": name}, self.root / f"{name}.log"
            )
            wait_ready(self.urls[name], timeout=120)
        with httpx.Client(
            base_url=self.urls["gateway"], headers={"Authorization": f"Bearer {staff_key}"}
        ) as http:
            self.key = http.post("/api/v1/api-keys", json={"role": "staff", "name": "bench"}).json()["key"]
            anchor = http.post("/api/v1/anchors", json={"name": "Bench University", "type": "university"})
            anchor.raise_for_status()
        self.line = json.dumps(
            {
                "anchor_id": anchor.json()["id"],
                "title": "Bench school meals",
                "description": "Meals for schools across the city",
                "cpv_codes": ["55300000"],
                "estimated_value_pence": 12_000_000,
                "category": "services",
                "status": "planned",
                "visibility": "public",
                "expected_tender_date": "2027-05-01",
                "suitable_for_sme": True,
                "suitable_for_vcse": True,
            }
        )

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.nats is not None:
            self.nats.stop()

    def measure(self, route: str, connections: int, seconds: float) -> dict:
        method, path, body = (
            ("GET", READ_PATH, "") if route == "pass-through" else ("POST", WRITE_PATH, self.line)
        )
        pids = {name: process.pid for name, process in self.processes.items()}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        headers = {"Authorization": f"Bearer {self.key}"}
        result = run_load(self.urls["gateway"], method, path, headers, body, connections, seconds)
        count = max(result["requests"], 1)
        for name, pid in pids.items():
            result[f"{name}_cpu_us"] = (cpu_seconds(pid) - before[name]) / count * 1e6
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        url, method, path, headers, body, connections, seconds = json.loads(args.loadgen)
        print(json.dumps(asyncio.run(_load(url, method, path, headers, body, connections, seconds))))
        return

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "SEEDBED_", "DEMAND_", "OTEL_", "PROMETHEUS_"))
    }
    base |= {
        "SEEDBED_INTERNAL_SECRET": SECRET,
        "SEEDBED_ENVIRONMENT": "test",
        "SEEDBED_ACCESS_LOG": "false",
        "SEEDBED_LOG_LEVEL": "WARNING",
        "GATEWAY_STAFF_RATE_LIMIT_PER_MINUTE": "100000000",  # measure the path, not the limit
        "DEMAND_PIPELINE_PUBLISHER": "false",
    }
    environments = {
        "off": base | {"SEEDBED_HTTP_METRICS": "false"},
        "metrics": base,
        "tracing": base
        | {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        },
    }
    environments["sampled"] = environments["tracing"] | {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp:
        variants = {name: Variant(name, Path(tmp) / name, environments[name]) for name in VARIANTS}
        try:
            for variant in variants.values():
                variant.start()
            results: dict[tuple[str, str], list[dict]] = {}
            print(f"{args.connections} connections, {args.seconds:g} s a phase, {args.rounds} rounds\n")
            header = (
                f"{'route':<13} {'round':>5} {'variant':<8} {'req/s':>8} {'gw us/req':>9} {'svc us/req':>10}"
            )
            print(header)
            print("-" * len(header))
            for route in ("pass-through", "write"):
                for variant in variants.values():
                    variant.measure(route, args.connections, 1.0)  # warm pools and caches
                for number in range(1, args.rounds + 1):
                    # Each in turn, so a burst of load from elsewhere hits every variant.
                    for name, variant in variants.items():
                        result = variant.measure(route, args.connections, args.seconds)
                        results.setdefault((route, name), []).append(result)
                        print(
                            f"{route:<13} {number:>5} {name:<8} {result['rps']:>8.0f} "
                            f"{result['gateway_cpu_us']:>9.0f} {result['demand_cpu_us']:>10.0f}"
                            + (f"   {result['errors']} not 2xx" if result["errors"] else "")
                        )
            print(f"\nOTLP exports received by the sink: {_Sink.received}")
            print("\nmedians of the rounds, as ratios against off (throughput; CPU per request)")
            for route in ("pass-through", "write"):
                off = results[(route, "off")]
                for name in VARIANTS[1:]:
                    on = results[(route, name)]
                    throughput = median(o["rps"] / b["rps"] for o, b in zip(on, off, strict=True))
                    gateway_cpu = median(o["gateway_cpu_us"] for o in on) / median(
                        b["gateway_cpu_us"] for b in off
                    )
                    service_cpu = median(o["demand_cpu_us"] for o in on) / median(
                        b["demand_cpu_us"] for b in off
                    )
                    print(
                        f"{route:<13} {name:<8} throughput {throughput:.3f}x "
                        f"({(1 - throughput) * 100:+.1f}% cost); "
                        f"CPU per request: gateway {gateway_cpu:.3f}x, service {service_cpu:.3f}x"
                    )
            build_us, encode_us = span_floor()
            off = results[("pass-through", "off")]
            request_us = median(o["gateway_cpu_us"] + o["demand_cpu_us"] for o in off)
            print(
                f"\none recorded span, in this process: {build_us:.0f} us to build, {encode_us:.0f} us to "
                f"encode for OTLP; a pass-through request records two (gateway, service) against "
                f"{request_us:.0f} us of their CPU with tracing off: recording both adds "
                f"{2 * (build_us + encode_us) / request_us * 100:.0f}% to that CPU before any "
                "instrumentation's own work"
            )
        finally:
            for variant in variants.values():
                variant.stop()
            sink.shutdown()


if __name__ == "__main__":
    main()
