"""Load, soak and faults (issue 15): a bounded load generator on loopback drives mixed traffic
through the gateway of a running system (its own nats-server, the three services and the gateway
as uvicorn processes, PostgreSQL with one database per service) for ``--duration``
seconds (5 minutes by default), ``--concurrency`` requests in flight at most.

Reads: the pipeline, an enterprise's matches, a mentor's slots, the demand lines. Writes:
demand lines, milestones (each on a milestone not touched before), bookings (each on a free
hour). A webhook receiver (staff subscription to every event) and an SSE reader (reconnecting
with Last-Event-ID) are attached.

Prints throughput, p50/p95/p99 per route, errors, and the RSS of every process at the start,
after warm-up and at the end; then reconciles: each committed write's event is on its stream,
at a consumer (the gateway's record of consumed events; a service's inbox where one subscribes)
and delivered to the webhook and the SSE reader, each once.

``--faults``: NATS killed for 30 s and one service restarted during the run: only 503
problems meanwhile, never another 5xx; afterwards the same reconciliation and the time the
backlog took to drain.

Targets (pass/fail): RSS growth under 10% after warm-up; 0 lost and 0 doubled events; p99 of
every read route under 10x its p50.

    python -m bench.load [--duration 300] [--concurrency 8] [--faults] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import logging
import os
import random
import signal
import sqlite3
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import quantiles
from typing import Any

import asyncpg
import httpx
import nats
from aiohttp import web
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy.engine import make_url

from shared.nats import read_stream
from shared.testing.cluster import replicated_system
from shared.testing.databases import POSTGRES_ENV, DatabaseFactory
from shared.testing.ports import server_port
from shared.testing.system import SERVICES, System

try:
    import psutil
except ImportError:  # /proc serves the same figure on Linux
    psutil = None

API = "/api/v1"
STREAMS = ("ENTERPRISES", "DEMAND", "MENTORING")
DRAIN_LIMIT_SECONDS = 300.0  # after the load: what is not delivered by then is reported missing
ENV = {
    "GATEWAY_STAFF_RATE_LIMIT_PER_MINUTE": "1000000",  # the bench measures the system, not the limiter
    "GATEWAY_WEBHOOK_RETRY_SCHEDULE_SECONDS": "0.5,1,2,4,8,8,8,8",
    "SEEDBED_ACCESS_LOG": "false",
    **{f"{part.upper()}_DB_POOL_SIZE": "8" for part in (*SERVICES, "gateway")},
}
# Route template -> share of the traffic.
READS = {
    "GET /pipeline": 20,
    "GET /enterprises/{id}/matches": 20,
    "GET /mentors/{id}/slots": 20,
    "GET /demand": 20,
}
WRITES = {"POST /demand": 8, "PATCH /enterprises/{id}/milestones/{code}": 6, "POST /sessions": 6}
# The event type (prefix) each write publishes.
WRITE_EVENTS = {
    "POST /demand": "demand.item.published",
    "PATCH /enterprises/{id}/milestones/{code}": "enterprises.milestone.",
    "POST /sessions": "mentoring.session.booked",
}


def rss_bytes(pid: int) -> int:
    if psutil is not None:
        return int(psutil.Process(pid).memory_info().rss)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def processes(system: System) -> dict[str, int]:
    out = {name: p.process.pid for name, p in system.services.items() if p.process is not None}
    if system.gateway.process is not None:
        out["gateway"] = system.gateway.process.pid
    if system.nats.process is not None:
        out["nats-server"] = system.nats.process.pid
    return out


def rss_snapshot(system: System) -> dict[str, tuple[int, int]]:
    """name -> (pid, RSS in bytes)."""
    out = {}
    for name, pid in processes(system).items():
        with contextlib.suppress(OSError):
            out[name] = (pid, rss_bytes(pid))
    return out


# -- the integrator's side -------------------------------------------------------------------


@dataclass
class Hook:
    attempts: list[tuple[str, str, int]] = field(default_factory=list)  # webhook-id, event id, status
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts.append((request.headers.get("webhook-id", ""), json.loads(body)["id"], 204))
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = server_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return f"http://127.0.0.1:{self.port}/hook"


@dataclass
class Sse:
    url: str
    headers: dict[str, str]
    seen: list[tuple[int, str]] = field(default_factory=list)
    connections: int = 0
    refused: Counter[int] = field(default_factory=Counter)

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=30.0)) as http:
            while not stop.is_set():
                self.connections += 1
                headers = dict(self.headers)
                if self.seen:
                    headers["Last-Event-ID"] = str(self.seen[-1][0])
                with contextlib.suppress(httpx.HTTPError):
                    async with http.stream(
                        "GET",
                        f"{self.url}{API}/events/stream",
                        headers=headers,
                        params={} if self.seen else {"since": 0},
                    ) as response:
                        if response.status_code != 200:
                            self.refused[response.status_code] += 1
                        else:
                            await self._read(response, stop)
                await asyncio.sleep(0.5)

    async def _read(self, response: httpx.Response, stop: asyncio.Event) -> None:
        event: dict[str, str] = {}
        async for line in response.aiter_lines():
            if stop.is_set():
                return
            if line:
                name, _, value = line.partition(":")
                event[name] = event.get(name, "") + value.removeprefix(" ")
                continue
            if "id" in event and "data" in event:
                self.seen.append((int(event["id"]), json.loads(event["data"])["id"]))
            event = {}


# -- the traffic ----------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    bad_5xx: list[str] = field(default_factory=list)  # any 5xx but a 503 problem
    committed: list[tuple[str, str]] = field(default_factory=list)  # (route, resource ids text)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Parties:
    anchors: list[str]
    enterprises: list[str]
    mentors: list[str]
    codes: list[str]
    pairs: list[tuple[str, str]] = field(default_factory=list)
    hour: int = 0


async def setup(http: httpx.AsyncClient, tag: str) -> Parties:
    async def post(path: str, body: dict[str, Any]) -> str:
        response = await http.post(API + path, json=body)
        assert response.status_code == 201, f"{path}: {response.text}"
        return str(response.json()["id"])

    anchors = [
        await post("/anchors", {"name": f"Load anchor {tag} {n}", "type": "university"}) for n in range(5)
    ]
    for n in range(40):
        await post("/demand", line(anchors[n % 5], f"Seed {n}"))
    enterprises = [await post("/enterprises", enterprise(f"Load CIC {tag} {n}")) for n in range(150)]
    mentors = [await post("/mentors", mentor(f"Load Mentor {tag} {n}")) for n in range(30)]
    codes = [item["code"] for item in (await http.get(f"{API}/milestone-definitions")).json()["items"]]
    parties = Parties(anchors, enterprises, mentors, codes)
    parties.pairs = [(e, c) for c in codes for e in enterprises]
    random.shuffle(parties.pairs)
    return parties


def line(anchor_id: str, title: str) -> dict[str, Any]:
    return {
        "anchor_id": anchor_id,
        "title": title,
        "description": f"{title}: meals for schools across the city",
        "cpv_codes": ["55300000"],
        "estimated_value_pence": 12_000_000,
        "category": "services",
        "status": "planned",
        "visibility": "public",
        "expected_tender_date": "2027-05-01",
        "contract_start": "2027-09-01",
        "duration_months": 24,
        "suitable_for_sme": True,
        "suitable_for_vcse": True,
    }


def enterprise(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "legal_form": "cic_limited_by_guarantee",
        "postcode": "LS6 2QR",
        "cpv_codes": ["55300000"],
        "employees": 4,
        "turnover_pence": 25_000_000,
        "vcse": True,
        "works_with_public": True,
        "stage": "incubating",
    }


def mentor(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "email": f"{name.lower().replace(' ', '.')}@mentors.example",
        "organisation": "Leeds Anchor Network",
        "expertise": ["insurance"],
        "timezone": "Europe/London",
        "session_lengths_minutes": [30, 60],
        "availability": {
            "timezone": "Europe/London",
            "weekly": [{"weekday": day, "start": "00:00", "end": "24:00"} for day in range(7)],
            "minimum_notice_minutes": 0,
        },
    }


def request_for(route: str, parties: Parties, base: datetime) -> tuple[str, str, dict[str, Any] | None, dict]:
    """(method, path, json body, query) of one request of ``route``, and the resource it names."""
    if route == "GET /pipeline":
        return "GET", "/pipeline", None, {}
    if route == "GET /enterprises/{id}/matches":
        return "GET", f"/enterprises/{random.choice(parties.enterprises)}/matches", None, {"limit": 20}
    if route == "GET /mentors/{id}/slots":
        start = base + timedelta(days=random.randint(30, 60))
        query = {
            "start": start.isoformat(),
            "end": (start + timedelta(days=1)).isoformat(),
            "duration_minutes": 60,
        }
        return "GET", f"/mentors/{random.choice(parties.mentors)}/slots", None, query
    if route == "GET /demand":
        return "GET", "/demand", None, {"limit": 20}
    if route == "POST /demand":
        return (
            "POST",
            "/demand",
            line(random.choice(parties.anchors), f"Load line {uuid.uuid4().hex[:8]}"),
            {},
        )
    if route == "PATCH /enterprises/{id}/milestones/{code}":
        enterprise_id, code = parties.pairs.pop()
        body = {"status": "submitted", "evidence": {"reference": "LOAD-1"}, "value_pence": 10**9}
        return "PATCH", f"/enterprises/{enterprise_id}/milestones/{code}", body, {}
    # One booking an hour per mentor, every hour a new one: never two on one slot.
    hour, parties.hour = parties.hour, parties.hour + 1
    mentor_id = parties.mentors[hour % len(parties.mentors)]
    start = base + timedelta(hours=2 + hour // len(parties.mentors))
    body = {
        "mentor_id": mentor_id,
        # Consecutive hours share a start: their enterprises differ, or the second would be refused.
        "enterprise_id": parties.enterprises[hour % len(parties.enterprises)],
        "start": start.isoformat(),
        "duration_minutes": 60,
        "topic": "Public liability insurance",
    }
    return "POST", "/sessions", body, {}


async def worker(
    http: httpx.AsyncClient, parties: Parties, stats: Stats, deadline: float, base: datetime
) -> None:
    routes = list(READS) + list(WRITES)
    weights = list(READS.values()) + list(WRITES.values())
    while time.monotonic() < deadline:
        route = random.choices(routes, weights)[0]
        if route.startswith("PATCH") and not parties.pairs:
            continue
        method, path, body, query = request_for(route, parties, base)
        started = time.perf_counter()
        try:
            response = await http.request(method, API + path, json=body, params=query)
        except httpx.HTTPError as exc:
            stats.errors[f"{route}: {type(exc).__name__}"] += 1
            continue
        elapsed = time.perf_counter() - started
        status = response.status_code
        stats.statuses[route][status] += 1
        if status < 300:
            stats.latencies[route].append(elapsed)
            if route in WRITES:
                resource = (
                    path.removeprefix("/enterprises/") if route.startswith("PATCH") else response.json()["id"]
                )
                stats.committed.append((route, resource))
        elif status >= 500 and not (
            status == 503 and response.headers.get("content-type", "").startswith("application/problem+json")
        ):
            stats.bad_5xx.append(f"{route} {status} {response.text[:200]}")


# -- faults ---------------------------------------------------------------------------------


@dataclass
class Faults:
    nats_down_s: float = 0.0
    nats_back_at: float = 0.0
    restarted: str = ""
    backlog_drained_s: float | None = None


async def inject(system: System, start_after: float, faults: Faults, backlog: Any) -> None:
    await asyncio.sleep(start_after)
    system.nats.kill()
    down = time.monotonic()
    await asyncio.sleep(15)
    faults.restarted = "mentoring"
    mentoring = system.services["mentoring"]
    await asyncio.to_thread(mentoring.stop)  # while NATS is down
    mentoring.start()
    await asyncio.to_thread(mentoring.wait_ready, "/readyz", 300)
    await asyncio.sleep(max(0.0, 30 - (time.monotonic() - down)))
    system.nats.start()
    faults.nats_back_at = time.monotonic()
    faults.nats_down_s = faults.nats_back_at - down
    await system.nats.wait_jetstream(60)
    while await backlog() > 0:  # noqa: ASYNC110 - polls the databases, nothing to wait on
        await asyncio.sleep(0.2)
    faults.backlog_drained_s = time.monotonic() - faults.nats_back_at


# -- reconciliation -------------------------------------------------------------------------


async def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with contextlib.closing(sqlite3.connect(str(parsed.database))) as connection:
            return list(connection.execute(query).fetchall())
    connection = await asyncpg.connect(
        parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        return [tuple(r) for r in await connection.fetch(query)]
    finally:
        await connection.close()


async def stream_events(nats_url: str) -> list[tuple[str, dict[str, Any]]]:
    """(stream, CloudEvent) of every message on the services' streams."""
    nc = await nats.connect(nats_url)
    out = []
    try:
        js = nc.jetstream()
        for stream in STREAMS:
            everything = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            async for message in read_stream(js, stream, everything):
                out.append((stream, json.loads(message.data or b"{}")))
    finally:
        await nc.close()
    return out


def percentile_table(stats: Stats, seconds: float) -> tuple[list[str], dict[str, tuple[float, float, float]]]:
    lines = [f"{'route':45} {'ok':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  other statuses"]
    figures = {}
    for route in [*READS, *WRITES]:
        values = sorted(stats.latencies.get(route, []))
        others = {s: n for s, n in stats.statuses[route].items() if s >= 300}
        if len(values) >= 2:
            cuts = quantiles(values, n=100, method="inclusive")
            p50, p95, p99 = cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000
        else:
            p50 = p95 = p99 = float("nan")
        figures[route] = (p50, p95, p99)
        lines.append(
            f"{route:45} {len(values):7d} {len(values) / seconds:7.1f} "
            f"{p50:8.1f} {p95:8.1f} {p99:8.1f}  {others or ''}"
        )
    return lines, figures


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 shows where a long run is
    if not args.postgres:
        raise SystemExit("bench.load runs on PostgreSQL: --postgres URL or SEEDBED_TEST_POSTGRES_URL")
    root = Path(tempfile.mkdtemp(prefix="seedbed-load-"))
    databases = DatabaseFactory(root / "databases", args.postgres)
    try:
        with replicated_system(root, databases, replicas=1, nats_nodes=1, env=ENV, audit=False) as replicated:
            parts = {name: processes[0] for name, processes in replicated.replicas.items()}
            system = System(
                replicated.nats.nodes[0], {name: parts[name] for name in SERVICES}, parts["gateway"]
            )
            return asyncio.run(measure(system, args))
    finally:
        asyncio.run(databases.drop_all())


async def measure(system: System, args: argparse.Namespace) -> int:
    tag = uuid.uuid4().hex[:6]
    staff = {"Authorization": f"Bearer {system.staff_key}"}
    database_urls = {
        name: system.gateway.env[f"{name.upper()}_DATABASE_URL"] for name in (*SERVICES, "gateway")
    }
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    async with httpx.AsyncClient(base_url=system.url, headers=staff, timeout=30, limits=limits) as http:
        hook = Hook()
        subscribed = await http.post(
            f"{API}/webhooks",
            json={"url": await hook.start(), "types": ["enterprises.*", "demand.*", "mentoring.*"]},
        )
        assert subscribed.status_code == 201, subscribed.text
        print("setting up parties", flush=True)
        parties = await setup(http, tag)
        print("load starts", flush=True)
        await asyncio.sleep(2)  # the setup's events settle before the baseline
        before = {e["id"] for _, e in await stream_events(system.nats.url)}
        rss_start = rss_snapshot(system)
        stop = asyncio.Event()
        sse = Sse(system.url, staff)
        sse_task = asyncio.create_task(sse.run(stop))
        stats = Stats()
        base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        started = time.monotonic()
        deadline = started + args.duration
        warmup = min(args.duration * 0.2, 60.0)

        async def unsent() -> int:
            total = 0
            for name in SERVICES:
                with contextlib.suppress(Exception):
                    total += (
                        await rows(database_urls[name], "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
                    )[0][0]
            return total

        faults = Faults()
        fault_task = (
            asyncio.create_task(inject(system, args.duration * 0.3, faults, unsent)) if args.faults else None
        )
        rss_warm: dict[str, tuple[int, int]] = {}

        async def after_warmup() -> None:
            await asyncio.sleep(warmup)
            rss_warm.update(rss_snapshot(system))

        warm_task = asyncio.create_task(after_warmup())
        await asyncio.gather(*(worker(http, parties, stats, deadline, base) for _ in range(args.concurrency)))
        seconds = time.monotonic() - started
        rss_end = rss_snapshot(system)
        await warm_task
        if fault_task is not None:
            await fault_task

        # Drain: every committed write's event delivered to the webhook and the SSE reader.
        drain_started = time.monotonic()
        expected = Counter(WRITE_EVENTS[route] for route, _ in stats.committed)

        def ours(event: dict[str, Any]) -> bool:
            return event["id"] not in before and any(
                event["type"].startswith(p) for p in WRITE_EVENTS.values()
            )

        # Once the outboxes are empty every event is on its stream: read the streams once, then
        # wait (bounded) until the webhook and the SSE reader have each of them.
        while await unsent() and time.monotonic() - drain_started < DRAIN_LIMIT_SECONDS:  # noqa: ASYNC110 - polling the databases
            await asyncio.sleep(0.5)
        outboxes_s = time.monotonic() - drain_started
        events = [(s, e) for s, e in await stream_events(system.nats.url) if ours(e)]
        ids = {e["id"] for _, e in events}
        caught_up: dict[str, float] = {}
        while time.monotonic() - drain_started < DRAIN_LIMIT_SECONDS:
            hooked = {e for _, e, status in hook.attempts if status < 300}
            for reader, seen in (("webhook", hooked), ("SSE", {e for _, e in sse.seen})):
                if reader not in caught_up and ids <= seen:
                    caught_up[reader] = time.monotonic() - drain_started
            if len(caught_up) == 2:
                break
            await asyncio.sleep(0.5)
        drain_s = time.monotonic() - drain_started
        drain_parts = {"outboxes empty": outboxes_s} | caught_up
        stop.set()
        sse_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sse_task
        if hook.runner is not None:
            await hook.runner.cleanup()

    # Reconcile the committed writes against the streams, a consumer, the webhook and SSE.
    on_stream = Counter(e["id"] for _, e in events)
    by_type = Counter(next(p for p in WRITE_EVENTS.values() if e["type"].startswith(p)) for _, e in events)
    ids = set(on_stream)
    consumed_gateway = {
        r[0] for r in await rows(database_urls["gateway"], "SELECT event_id FROM webhook_events")
    }
    inbox = Counter(
        r[0]
        for r in await rows(
            database_urls["enterprises"], "SELECT event_id FROM inbox WHERE consumer = 'enterprises-demand'"
        )
    )
    lines_ids = {e["id"] for _, e in events if e["type"].startswith("demand.item.published")}
    delivered = Counter(e for _, e, status in hook.attempts if status < 300)
    webhook_ids: dict[str, set[str]] = defaultdict(set)
    for webhook_id, event_id, _ in hook.attempts:
        webhook_ids[event_id].add(webhook_id)
    sse_count = Counter(e for _, e in sse.seen)
    lost = {
        "stream (vs committed writes)": sum(max(0, n - by_type[k]) for k, n in expected.items()),
        "consumer: gateway": len(ids - consumed_gateway),
        "consumer: enterprises-demand (lines)": len(lines_ids - set(inbox)),
        "webhook": len(ids - set(delivered)),
        "sse": len(ids - set(sse_count)),
    }
    doubled = {
        "stream (vs committed writes)": sum(max(0, by_type[k] - n) for k, n in expected.items())
        + sum(n - 1 for n in on_stream.values()),
        "consumer: enterprises-demand (lines)": sum(n - 1 for e, n in inbox.items() if e in lines_ids),
        "webhook": sum(n - 1 for e, n in delivered.items() if e in ids),
        "webhook-id per event": sum(len(v) - 1 for e, v in webhook_ids.items() if e in ids),
        "sse": sum(n - 1 for e, n in sse_count.items() if e in ids),
    }

    # Report.
    total = sum(len(v) for v in stats.latencies.values())
    mode = "on" if args.faults else "off"
    print(f"\nbench.load: {args.duration:.0f} s, {args.concurrency} in flight, faults {mode}")
    print(f"throughput: {total / seconds:.1f} req/s ok ({total} in {seconds:.1f} s)")
    print(f"transport errors: {dict(stats.errors)}")
    table, figures = percentile_table(stats, seconds)
    print("\n".join(table))
    print(f"\nRSS (MiB): {'process':14} {'start':>8} {'warm':>8} {'end':>8} {'growth':>8}")
    rss_ok = True
    for name in rss_start:
        start = rss_start[name][1]
        warm_pid, warm = rss_warm.get(name, (0, 0))
        end_pid, end = rss_end.get(name, (0, 0))
        same = warm_pid == end_pid and warm > 0
        growth = (end - warm) / warm if same else float("nan")
        note = "" if same else " (restarted: not compared)"
        if same and name != "nats-server":
            rss_ok = rss_ok and growth < 0.10
        mib = f"{start / 2**20:8.1f} {warm / 2**20:8.1f} {end / 2**20:8.1f}"
        print(f"           {name:14} {mib} {growth:+8.1%}{note}")
    print(f"\ncommitted writes: {dict(Counter(r for r, _ in stats.committed))}")
    print(
        f"their events: on the streams {len(ids)}, at the gateway consumer {len(ids & consumed_gateway)}, "
        f"lines at enterprises-demand {len(lines_ids & set(inbox))}/{len(lines_ids)}, "
        f"webhook deliveries {sum(delivered[e] for e in ids)}, SSE {sum(sse_count[e] for e in ids)} "
        f"({sse.connections} SSE connections, refused {dict(sse.refused)})"
    )
    print(f"lost: {lost}\ndoubled: {doubled}")
    parts = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in drain_parts.items())
    print(f"drain after the load: {drain_s:.1f} s ({parts})")
    if args.faults:
        drained = (
            f"{faults.backlog_drained_s:.1f} s" if faults.backlog_drained_s is not None else "not drained"
        )
        print(
            f"faults: NATS down {faults.nats_down_s:.1f} s, {faults.restarted} restarted; "
            f"outbox backlog drained {drained} after NATS returned"
        )
    print(f"5xx other than a 503 problem: {len(stats.bad_5xx)} {stats.bad_5xx[:5]}")
    checks = {
        "RSS growth under 10% after warm-up (Python processes)": rss_ok,
        "0 lost events": sum(lost.values()) == 0,
        "0 doubled events": sum(doubled.values()) == 0,
        "p99 of every read route under 10x its p50": all(figures[r][2] < 10 * figures[r][0] for r in READS),
        "never a 5xx but a 503 problem": not stats.bad_5xx,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    parser.add_argument("--faults", action="store_true", help="kill NATS for 30 s and restart a service")
    parser.add_argument("--postgres", default=os.environ.get(POSTGRES_ENV), help="PostgreSQL URL")
    args = parser.parse_args()
    raise SystemExit(run(args))


if __name__ == "__main__":
    main()
