"""Replicas and a NATS cluster, killed mid-run (marker ``cluster``, not in the default run).

Three routed nats-servers with every stream at three replicas, PostgreSQL with one database per
service, two uvicorn replicas of each service and of the gateway. Writes go through both
gateways (retried on the other with the same Idempotency-Key when one answers 503), a webhook
receiver (refusing some first attempts) and an SSE reader (reconnecting with Last-Event-ID to
either gateway) are attached; one NATS node and one replica of each service are killed
(SIGKILL) in the middle and brought back. Then every committed event is on its stream once,
reached each consumer once, was delivered to the webhook under one webhook-id and seen once by
the SSE reader; and both replicas of each service committed consumer, relay and job work
(read from PostgreSQL: each replica logs in as a role of its own, see shared.testing.cluster).

CLUSTER_WRITES sets how many writes (2,000 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from aiohttp import web

from gateway.tests.webhook_receiver import verify_standard_webhook
from shared.testing.cluster import (
    ReplicatedSystem,
    asyncpg_dsn,
    audit_rows,
    parse_sse,
    replicated_system,
    role_counts,
)
from shared.testing.databases import DatabaseFactory
from shared.testing.polling import wait_until
from shared.testing.ports import server_port
from shared.testing.system import BOOTSTRAP_KEY, SERVICES
from tests.conftest import (
    API,
    CLOCK_FILE,
    STREAMS,
    MentoringClock,
    enterprise_body,
    line_body,
    mentor_body,
    stream_messages,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

WRITES = int(os.environ.get("CLUSTER_WRITES", "2000"))
CONCURRENCY = 12
STAFF = {"Authorization": f"Bearer {BOOTSTRAP_KEY}"}
ENV = {
    "ENTERPRISES_EXPIRY_JOB_INTERVAL_SECONDS": "0.5",
    "MENTORING_REMINDER_INTERVAL_SECONDS": "0.3",
    "DEMAND_PIPELINE_POLL_SECONDS": "0.3",
    "DEMAND_PIPELINE_RELEASE_SECONDS": "0.3",
    "GATEWAY_WEBHOOK_RETRY_SCHEDULE_SECONDS": "0.5,1,2,4,8,8,8,8",
    "GATEWAY_WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES": "100000",
    "GATEWAY_STAFF_RATE_LIMIT_PER_MINUTE": "100000",
    "SEEDBED_ACCESS_LOG": "false",
}
# The events each service's periodic jobs write: milestone expiry warnings, session reminders,
# pipeline snapshots.
JOB_EVENTS = {"enterprises": "milestone.expiring", "mentoring": "reminder_due", "demand": "pipeline"}


@pytest.fixture(scope="module")
def mentoring_clock(tmp_path_factory: pytest.TempPathFactory) -> MentoringClock:
    """The clock of both mentoring replicas (real time, until the test moves it)."""
    clock = MentoringClock(tmp_path_factory.mktemp("clock") / "mentoring-clock")
    clock.set(timedelta(0))
    return clock


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    _database_factory_sync: DatabaseFactory,
    mentoring_clock: MentoringClock,
) -> Iterator[ReplicatedSystem]:
    if _database_factory_sync.postgres_url is None:
        pytest.fail("the cluster test runs on PostgreSQL: set SEEDBED_TEST_POSTGRES_URL")
    with replicated_system(
        tmp_path_factory.mktemp("cluster"),
        _database_factory_sync,
        env=ENV | {CLOCK_FILE: str(mentoring_clock.path)},
        apps={"mentoring": "tests.conftest:mentoring_app"},
    ) as system:
        yield system


# -- the integrator's side ------------------------------------------------------------------


@dataclass
class Hook:
    """A webhook receiver that refuses the first attempt of about one event in eight."""

    secret: str = ""
    attempts: list[tuple[str, str, int, bool]] = field(default_factory=list)  # webhook-id, event, status
    refused: set[str] = field(default_factory=set)
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        webhook_id = headers.get("webhook-id", "")
        signed = bool(self.secret) and verify_standard_webhook(self.secret, headers, body)
        first = webhook_id not in self.refused
        refuse = first and hashlib.sha256(webhook_id.encode()).digest()[0] % 8 == 0
        if refuse:
            self.refused.add(webhook_id)
        status = 500 if refuse else 204
        self.attempts.append((webhook_id, json.loads(body)["id"], status, signed))
        return web.Response(status=status)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.port = server_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return f"http://127.0.0.1:{self.port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class SseReader:
    """Reads the event stream from position 0, reconnecting (to the other gateway, with
    Last-Event-ID) when a connection fails and every few seconds on purpose."""

    urls: list[str]
    seen: list[tuple[int, str]] = field(default_factory=list)  # (position, event id)
    connections: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=30.0)) as http:
            while not self.stop.is_set():
                url = self.urls[self.connections % len(self.urls)]
                self.connections += 1
                headers = dict(STAFF)
                params = {}
                if self.seen:
                    headers["Last-Event-ID"] = str(self.seen[-1][0])
                else:
                    params["since"] = "0"
                with contextlib.suppress(httpx.HTTPError, asyncio.TimeoutError):
                    await asyncio.wait_for(self._read(http, url, headers, params), 4.0)
                await asyncio.sleep(0.1)

    async def _read(self, http: httpx.AsyncClient, url: str, headers: dict, params: dict) -> None:
        async with http.stream("GET", f"{url}{API}/events/stream", headers=headers, params=params) as r:
            if r.status_code != 200:
                await asyncio.sleep(0.5)  # 503 while NATS is away from this gateway
                return
            lines: list[str] = []
            async for line in r.aiter_lines():
                if line:
                    lines.append(line)
                    continue
                event = parse_sse(lines)
                lines = []
                if "id" in event:
                    self.seen.append((int(event["id"]), json.loads(event["data"])["id"]))


# -- the writes -------------------------------------------------------------------------------


@dataclass
class Writer:
    gateways: list[str]
    http: httpx.AsyncClient
    committed: list[tuple[str, str]] = field(default_factory=list)  # (kind, resource id)
    failed: list[str] = field(default_factory=list)
    retried: int = 0
    done: int = 0

    async def send(
        self, n: int, method: str, path: str, body: dict[str, Any], auth: dict[str, str] = STAFF
    ) -> dict[str, Any] | None:
        """Through gateway ``n % 2``, then the other, with one Idempotency-Key, until it commits."""
        key = str(uuid.uuid4())
        last = ""
        for attempt in range(60):
            url = self.gateways[(n + attempt) % len(self.gateways)]
            headers = auth | {"Idempotency-Key": key}
            if method == "PATCH" and attempt > 0:
                # A milestone change takes no Idempotency-Key: did the failed attempt commit?
                with contextlib.suppress(httpx.HTTPError):
                    now = await self.http.get(f"{url}{API}{path}", headers=STAFF)
                    if now.status_code == 200 and now.json().get("status") == body["status"]:
                        return dict(now.json())
            try:
                response = await self.http.request(method, f"{url}{API}{path}", json=body, headers=headers)
            except httpx.HTTPError as exc:
                last = repr(exc)
            else:
                if response.status_code < 300:
                    return dict(response.json())
                last = f"{response.status_code} {response.text[:300]}"
                if response.status_code < 500 and response.status_code != 409:
                    break
            self.retried += 1
            await asyncio.sleep(0.2 if attempt < 10 else 1.0)
        self.failed.append(f"{method} {path}: {last}")
        return None


async def setup_parties(http: httpx.AsyncClient, url: str, tag: str) -> dict[str, list[Any]]:
    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await http.post(f"{url}{API}{path}", json=body, headers=STAFF)
        assert response.status_code == 201, f"{path}: {response.status_code} {response.text}"
        return dict(response.json())

    anchors = [
        (await post("/anchors", {"name": f"Cluster anchor {tag} {n}", "type": "university"}))["id"]
        for n in range(8)
    ]
    enterprises = [
        (await post("/enterprises", enterprise_body(f"Cluster CIC {tag} {n}")))["id"] for n in range(40)
    ]
    mentors = [
        (await post("/mentors", mentor_body(f"Cluster Mentor {tag} {n}", ["insurance"])))["id"]
        for n in range(20)
    ]
    catalogue = await http.get(f"{url}{API}/milestone-definitions", headers=STAFF)
    assert catalogue.status_code == 200, catalogue.text
    codes = [item["code"] for item in catalogue.json()["items"]]
    # Nobody verifies their own submission: a second member of staff reviews.
    reviewer = await post("/api-keys", {"role": "staff", "subject_id": None, "name": "cluster reviewer"})
    return {
        "anchors": anchors,
        "enterprises": enterprises,
        "mentors": mentors,
        "codes": codes,
        "reviewer": [{"Authorization": f"Bearer {reviewer['key']}"}],
    }


def first_booking_hour() -> datetime:
    """The start of the first bookings: a whole hour, more than an hour ahead."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)


async def drive(
    writer: Writer,
    parties: dict[str, list[Any]],
    tag: str,
    halfway: asyncio.Event,
    back: asyncio.Event,
    base: datetime,
) -> None:
    """WRITES writes: 40% demand lines, 20% enterprises, 20% milestones (submitted, then verified
    to lapse within the warning window), 20% bookings (one an hour per mentor from ``base``)."""
    anchors, enterprises, mentors = parties["anchors"], parties["enterprises"], parties["mentors"]
    pairs = [(e, c) for c in parties["codes"] for e in enterprises]
    kinds = ["line", "enterprise", "milestone", "line", "booking"] * (WRITES // 5 + 1)
    plan: list[tuple[int, str]] = []
    count = 0
    for kind in kinds:
        if count >= WRITES:
            break
        plan.append((len(plan), kind))
        count += 2 if kind == "milestone" else 1
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    counters = Counter[str]()

    async def one(n: int, kind: str) -> None:
        index = counters[kind]
        counters[kind] += 1
        if kind == "line":
            made = await writer.send(
                n, "POST", "/demand", line_body(anchors[index % len(anchors)], f"Cluster line {tag} {n}")
            )
            if made:
                writer.committed.append(("line", made["id"]))
        elif kind == "enterprise":
            made = await writer.send(n, "POST", "/enterprises", enterprise_body(f"Cluster CIC {tag} w{n}"))
            if made:
                writer.committed.append(("enterprise", made["id"]))
        elif kind == "milestone":
            enterprise, code = pairs[index % len(pairs)]
            path = f"/enterprises/{enterprise}/milestones/{code}"
            submitted = {"status": "submitted", "evidence": {"reference": f"REF-{n}"}, "value_pence": 10**9}
            if await writer.send(n, "PATCH", path, submitted):
                writer.committed.append(("milestone", f"{enterprise}/{code}"))
            lapses = (datetime.now(UTC) + timedelta(days=5)).isoformat()
            verify = {"status": "verified", "expires_at": lapses}
            if await writer.send(n + 1, "PATCH", path, verify, parties["reviewer"][0]):
                writer.committed.append(("milestone", f"{enterprise}/{code}"))
        else:
            start = base + timedelta(hours=index // len(mentors))
            body = {
                "mentor_id": mentors[index % len(mentors)],
                "enterprise_id": enterprises[index % len(enterprises)],
                "start": start.isoformat(),
                "duration_minutes": 60,
                "topic": "Public liability insurance",
            }
            made = await writer.send(n, "POST", "/sessions", body)
            if made:
                writer.committed.append(("booking", made["id"]))
        writer.done += 2 if kind == "milestone" else 1
        if writer.done >= WRITES * 0.35:
            halfway.set()

    async def worker() -> None:
        while not queue.empty():
            n, kind = queue.get_nowait()
            if writer.done >= WRITES * 0.35 and not back.is_set():
                await asyncio.sleep(0.05)  # keep some writes going through the outage, not all
            await one(n, kind)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def remind(clock: MentoringClock, base: datetime, bookings: int, mentors: int) -> None:
    """Let mentoring's time pass, an hour of bookings at a time, to 59 minutes before each hour's
    sessions: their "1 hour before" reminders come due then, and both replicas' jobs share them.
    (Their "24 hours before" ones were due before the booking: recorded as skipped, by design.)"""
    hours = -(-bookings // mentors)
    for hour in range(hours):
        due = base + timedelta(hours=hour, minutes=-59)
        clock.set(due - datetime.now(UTC))
        await asyncio.sleep(1.5)  # several runs of the reminder job of each replica


async def faults(system: ReplicatedSystem, halfway: asyncio.Event, back: asyncio.Event) -> dict[str, float]:
    """At a third of the writes: SIGKILL one NATS node and one replica of each service; bring
    them back 15 s later."""
    await halfway.wait()
    killed = time.monotonic()
    system.nats.nodes[0].kill()
    for name in SERVICES:
        process = system.replicas[name][0].process
        assert process is not None
        process.kill()
        process.wait()
    await asyncio.sleep(15)
    system.nats.nodes[0].start()
    for name in SERVICES:
        system.replicas[name][0].start()
    for name in SERVICES:
        await asyncio.to_thread(system.replicas[name][0].wait_ready, "/readyz", 120)
    back.set()
    return {"outage_s": time.monotonic() - killed}


# -- what the engines hold ----------------------------------------------------------------------


def matches(subject: str, pattern: str) -> bool:
    s, p = subject.split("."), pattern.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(s) == len(p)


async def consumers_of(nats_url: str) -> dict[str, tuple[str, list[str]]]:
    """durable -> (stream, filter subjects) of every consumer on the services' streams."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        out = {}
        for stream in STREAMS:
            for info in await js.consumers_info(stream):
                config = info.config
                subjects = list(
                    config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
                )
                out[str(config.durable_name)] = (stream, subjects or [">"])
        return out
    finally:
        await nc.close()


async def pending(nats_url: str) -> int:
    """Messages of the services' streams some consumer has not acknowledged yet."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        total = 0
        for stream in STREAMS:
            for info in await js.consumers_info(stream):
                total += info.num_pending + info.num_ack_pending
        return total
    finally:
        await nc.close()


async def fetch(url: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()


async def unsent(system: ReplicatedSystem) -> int:
    total = 0
    for name in SERVICES:
        rows = await fetch(
            system.database_urls[name], "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"
        )
        total += int(rows[0]["n"])
    return total


async def test_replicas_and_a_nats_cluster_killed_mid_run_lose_and_double_nothing(
    cluster: ReplicatedSystem, mentoring_clock: MentoringClock
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:6]
    gateways = [g.url for g in cluster.gateways]
    nats_url = cluster.nats.nodes[1].url
    hook = Hook()
    reader = SseReader(gateways)
    # Events the jobs may have written before the subscription: the webhook never gets those.
    before = {m.event["id"] for m in await stream_messages(nats_url)}
    async with httpx.AsyncClient(timeout=20) as http:
        subscribed = await http.post(
            f"{gateways[0]}{API}/webhooks",
            json={"url": await hook.start(), "types": ["enterprises.*", "demand.*", "mentoring.*"]},
            headers=STAFF,
        )
        assert subscribed.status_code == 201, subscribed.text
        hook.secret = subscribed.json()["secret"]
        sse = asyncio.create_task(reader.run())
        parties = await setup_parties(http, gateways[1], tag)
        # Bookings need the enterprises in mentoring's copy (from their events).
        mentoring = cluster.database_urls["mentoring"]
        await wait_until(
            lambda: _known(mentoring, "enterprises.enterprise.registered.v1", len(parties["enterprises"])),
            timeout=120,
            interval=0.5,
        )

        writer = Writer(gateways, http)
        halfway, back = asyncio.Event(), asyncio.Event()
        write_started = time.monotonic()
        fault_task = asyncio.create_task(faults(cluster, halfway, back))
        base = first_booking_hour()
        await drive(writer, parties, tag, halfway, back, base)
        outage = await fault_task
        writes_s = time.monotonic() - write_started
        bookings = sum(1 for kind, _ in writer.committed if kind == "booking")
        await remind(mentoring_clock, base, bookings, len(parties["mentors"]))

        drain_started = time.monotonic()

        async def drained() -> bool:
            return await unsent(cluster) == 0 and await pending(nats_url) == 0

        await wait_until(drained, timeout=300, interval=1.0)
        events = {m.event["id"]: m for m in await stream_messages(nats_url)}

        def hooked() -> bool:
            return {e for _, e, status, _ in hook.attempts if status < 300} >= set(events) - before

        await wait_until(hooked, timeout=180, interval=0.5)
        await wait_until(lambda: {e for _, e in reader.seen} >= set(events), timeout=120, interval=0.5)
        drain_s = time.monotonic() - drain_started
        reader.stop.set()
        await sse
        await hook.stop()

    # Every write asked for committed (through one gateway or the other).
    assert not writer.failed, writer.failed[:10]
    assert writer.done >= WRITES and len(writer.committed) == writer.done

    # The stream of each service holds each event of its outbox once, and nothing else.
    messages = await stream_messages(nats_url)
    types = {m.event["id"]: m.event["type"] for m in messages}
    assert len(messages) == len(events), "an event is on a stream twice"
    for name in SERVICES:
        outbox = {r["id"] for r in await fetch(cluster.database_urls[name], "SELECT id FROM outbox")}
        on_stream = {m.event["id"] for m in messages if m.stream == name.upper()}
        assert_same(f"{name}'s outbox (left) and stream", outbox, on_stream, types)
    # No event was given up on: every consumer's dead letters, gateway's included, are empty.
    for name in (*SERVICES, "gateway"):
        letters = await fetch(
            cluster.database_urls[name], "SELECT consumer, event_id, error FROM dead_letters"
        )
        assert not letters, (name, len(letters), [dict(r) for r in letters[:5]])
    # Each committed write's event is there: its resource is the event's subject.
    subjects = Counter(m.event["subject"] for m in messages)
    for kind, resource in writer.committed:
        if kind != "milestone":
            assert subjects[resource] >= 1, (kind, resource)

    # Each consumer got each event of its subjects exactly once.
    consumers = await consumers_of(nats_url)
    inboxes: dict[str, list[str]] = defaultdict(list)
    for name in SERVICES:
        for row in await fetch(cluster.database_urls[name], "SELECT consumer, event_id FROM inbox"):
            inboxes[row["consumer"]].append(row["event_id"])
    assert set(inboxes) <= set(consumers), (sorted(consumers), sorted(inboxes))
    for durable, (stream, filters) in consumers.items():
        expected = {
            m.event["id"]
            for m in messages
            if m.stream == stream and any(matches(m.subject, f) for f in filters)
        }
        got = inboxes.get(durable, [])
        assert len(got) == len(set(got)), durable
        assert_same(f"consumer {durable}'s inbox (left) and its events", set(got), expected, types)

    # Both replicas of each service committed consumer, relay and job work.
    shares: dict[str, dict[str, dict[str, int]]] = {}
    for name in (*SERVICES, "gateway"):
        rows = await audit_rows(cluster.database_urls[name])
        jobs = [r for r in rows if r[0] == "write" and JOB_EVENTS.get(name, "-") in r[2]]
        shares[name] = role_counts(rows, cluster.roles) | role_counts(
            [("job", who, d) for _, who, d in jobs], cluster.roles
        )
        consumed = Counter(d for w, _, d in rows if w == "consumer")
        assert all(n == 1 for n in consumed.values()), f"{name}: an event consumed twice"
    print(f"\nwork by replica: {json.dumps(shares, indent=1)}")
    for name in SERVICES:
        for work in ("consumer", "relay", "job"):
            by = shares[name].get(work, {})
            assert all(by.get(f"{name}#{i}", 0) > 0 for i in range(2)), (name, work, by)

    # Webhooks: every event delivered once, under one webhook-id however often attempted.
    ids_of: dict[str, set[str]] = defaultdict(set)
    events_of: dict[str, set[str]] = defaultdict(set)
    for webhook_id, event_id, _, signed in hook.attempts:
        assert signed, webhook_id
        ids_of[event_id].add(webhook_id)
        events_of[webhook_id].add(event_id)
    assert all(len(v) == 1 for v in ids_of.values())
    assert all(len(v) == 1 for v in events_of.values())
    delivered = Counter(e for _, e, status, _ in hook.attempts if status < 300)
    assert_same(
        "webhook deliveries (left) and events", set(delivered), set(events) - before, types, extra=before
    )
    assert max(delivered.values()) == 1, "an event delivered twice"
    retried = len(hook.attempts) - len(delivered)
    assert retried > 0  # the refused first attempts were tried again

    # The SSE reader, over all its reconnections, saw every event once and in stream order.
    positions = [p for p, _ in reader.seen]
    assert positions == sorted(set(positions)), "a position twice or out of order"
    seen = [e for _, e in reader.seen]
    assert len(seen) == len(set(seen)), "an event seen twice"
    assert_same("events seen over SSE (left) and on the streams", set(seen), set(events), types)
    assert reader.connections > 2

    print(
        f"cluster run: {WRITES} writes in {writes_s:.1f} s ({writer.retried} retried on the other gateway), "
        f"outage {outage['outage_s']:.1f} s, drained in {drain_s:.1f} s, {len(events)} events, "
        f"{len(hook.attempts)} webhook attempts ({retried} retries), {reader.connections} SSE connections, "
        f"whole test {time.monotonic() - started:.1f} s"
    )


def assert_same(
    what: str, got: set[str], expected: set[str], types: dict[str, str], *, extra: set[str] = frozenset()
) -> None:
    """``got == expected`` (``extra`` may be in ``got`` too), failing with counts and a few
    examples with their types rather than a diff of thousands of ids."""
    missing, surplus = expected - got, got - expected - extra

    def some(ids: set[str]) -> list[str]:
        return [f"{i} ({types.get(i, 'not on any stream')})" for i in sorted(ids)[:5]]

    assert not missing and not surplus, (
        f"{what}: {len(missing)} missing, e.g. {some(missing)}; {len(surplus)} extra, e.g. {some(surplus)}"
    )


async def _known(database_url: str, event_type: str, count: int) -> bool:
    rows = await fetch(
        database_url,
        f"SELECT count(*) AS n FROM inbox WHERE event_type = '{event_type}'",
    )
    return int(rows[0]["n"]) >= count
