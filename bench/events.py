"""Event pipeline figures (issue 2): raw JetStream against the transactional outbox.

Prints, in one run against one nats-server started here:
- raw JetStream publish-to-receive latency p50/p99;
- commit-to-receive latency through the outbox p50/p99, and its ratio to raw;
- outbox drain rate for a 20,000-event backlog against the raw batched publish rate.
Targets: p50 within 3x raw, p99 within 5x raw, drain at least 25% of raw batched.

    python -m bench.events [--samples 2000] [--backlog 20000]

SQLite always; PostgreSQL too when SEEDBED_BENCH_POSTGRES_URL (or the default local
server) answers: a database is created for the run and dropped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import make_url

from shared import outbox
from shared.db import KIT_METADATA, Database, create_engine
from shared.events import CONTENT_TYPE, event_type, new_event, stream_for
from shared.nats import NatsLink, ensure_stream
from shared.outbox import OutboxRelay
from shared.testing.nats_server import NatsServer

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Receiver:
    """A push subscription on the stream that timestamps each message as it arrives."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}

    async def on_message(self, msg) -> None:
        now = time.perf_counter()
        msg_id = msg.headers.get("Nats-Msg-Id") if msg.headers else None
        if msg_id is None:
            return
        self.arrived[msg_id] = now
        waiter = self.waiters.pop(msg_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)

    def expect(self, msg_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if msg_id in self.arrived:
            future.set_result(self.arrived[msg_id])
        else:
            self.waiters[msg_id] = future
        return future


async def raw_latency(url: str, samples: int) -> list[float]:
    service = "rawlat" + uuid.uuid4().hex[:6]
    nc = await nats.connect(url)
    js = nc.jetstream()
    spec = stream_for(service)
    await ensure_stream(js, spec)
    receiver = Receiver()
    await js.subscribe(f"{service}.>", cb=receiver.on_message, ordered_consumer=True)
    await nc.flush()
    await nc.flush()
    latencies = []
    body = new_event(event_type(service, "thing", "created"), {"n": 0}, source="/bench").to_bytes()
    for _ in range(samples + 50):
        msg_id = uuid.uuid4().hex
        arrival = receiver.expect(msg_id)
        started = time.perf_counter()
        await js.publish(
            f"{service}.thing.created.v1", body, headers={"Nats-Msg-Id": msg_id, "Content-Type": CONTENT_TYPE}
        )
        latencies.append(await asyncio.wait_for(arrival, 5) - started)
    await js.delete_stream(spec.name)
    await nc.close()
    return latencies[50:]  # the first ones warm up


async def outbox_latency(url: str, database: Database, samples: int) -> tuple[list[float], list[float]]:
    service = "oblat" + uuid.uuid4().hex[:6]
    spec = stream_for(service)
    link = NatsLink(url, name="bench", streams=[spec])
    await link.start()
    await link.wait_ready(10)
    relay = OutboxRelay(database, link, sweep_seconds=60)
    await relay.start()
    nc = await nats.connect(url)
    receiver = Receiver()
    await nc.jetstream().subscribe(f"{service}.>", cb=receiver.on_message, ordered_consumer=True)
    await nc.flush()
    await nc.flush()
    latencies = []
    with_commit_call = []
    kind = event_type(service, "thing", "created")
    for n in range(samples + 50):
        event = new_event(kind, {"n": n}, source="/bench")
        arrival = receiver.expect(event.id)
        committed: list[float] = []
        async with database.session() as session:
            # The moment the database reported the commit (the hook runs as the DBAPI commit returns).
            sa_event.listen(
                session.sync_session, "after_commit", lambda _s, c=committed: c.append(time.perf_counter())
            )
            await outbox.add(session, event)
            calling = time.perf_counter()
            await session.commit()
        arrived = await asyncio.wait_for(arrival, 5)
        latencies.append(arrived - committed[0])
        with_commit_call.append(arrived - calling)

    await relay.drain()  # let it mark the last batch before its stream goes
    await relay.stop()
    await nc.jetstream().delete_stream(spec.name)
    await nc.close()
    await link.close()
    return latencies[50:], with_commit_call[50:]


async def raw_batched_rate(url: str, count: int) -> float:
    service = "rawrate" + uuid.uuid4().hex[:6]
    nc = await nats.connect(url)
    js = nc.jetstream()
    spec = stream_for(service)
    await ensure_stream(js, spec)
    bodies = [
        (
            uuid.uuid4().hex,
            new_event(event_type(service, "thing", "created"), {"n": n}, source="/b").to_bytes(),
        )
        for n in range(count)
    ]
    started = time.perf_counter()
    for start in range(0, count, 500):  # the same batch size as the relay
        futures = [
            await js.publish_async(
                f"{service}.thing.created.v1", body, headers={"Nats-Msg-Id": i, "Content-Type": CONTENT_TYPE}
            )
            for i, body in bodies[start : start + 500]
        ]
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await js.delete_stream(spec.name)
    await nc.close()
    return count / elapsed


async def outbox_drain_rate(url: str, database: Database, count: int) -> float:
    service = "drain" + uuid.uuid4().hex[:6]
    spec = stream_for(service)
    kind = event_type(service, "thing", "created")
    for start in range(0, count, 5000):
        async with database.transaction() as session:
            await outbox.add_many(
                session,
                [new_event(kind, {"n": n}, source="/b") for n in range(start, min(count, start + 5000))],
            )
    link = NatsLink(url, name="bench", streams=[spec])
    await link.start()
    await link.wait_ready(10)
    relay = OutboxRelay(database, link, batch_size=500, sweep_seconds=60)
    started = time.perf_counter()
    published = await relay.drain()
    elapsed = time.perf_counter() - started
    assert published == count, (published, count)
    await link.js.delete_stream(spec.name)
    await link.close()
    return count / elapsed


@contextlib.asynccontextmanager
async def databases(tmp: Path) -> AsyncIterator[list[tuple[str, Database]]]:
    made: list[tuple[str, Database]] = []
    sqlite_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    pg_admin = os.environ.get("SEEDBED_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    pg_name = None
    urls = [("sqlite", sqlite_url)]
    try:
        dsn = make_url(pg_admin).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn, timeout=2)
        pg_name = "seedbed_bench_events_" + uuid.uuid4().hex[:8]
        await conn.execute(f'CREATE DATABASE "{pg_name}"')
        await conn.close()
        urls.append(("postgresql", make_url(pg_admin).set(database=pg_name).render_as_string(False)))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL skipped: {exc!r}")
    for name, url in urls:
        engine = create_engine(url, pooled=False)
        async with engine.begin() as conn:
            await conn.run_sync(KIT_METADATA.create_all)
        await engine.dispose()
        made.append((name, Database(url, pool_size=5)))
    try:
        yield made
    finally:
        for _, db in made:
            await db.dispose()
        if pg_name:
            conn = await asyncpg.connect(dsn)
            await conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
            await conn.close()


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


async def main(samples: int, backlog: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = NatsServer(tmp / "nats")
        server.start()
        try:
            await server.wait_jetstream()
            raw = await raw_latency(server.url, samples)
            raw_p50, raw_p99 = percentile(raw, 0.5), percentile(raw, 0.99)
            raw_rate = await raw_batched_rate(server.url, backlog)
            print(f"samples={samples} backlog={backlog} (nats-server {server.url})")
            print(
                f"raw JetStream publish->receive   p50 {raw_p50 * 1e3:7.3f} ms   p99 {raw_p99 * 1e3:7.3f} ms"
            )
            print(f"raw batched JetStream publish    {raw_rate:9.0f} events/s")
            async with databases(tmp) as dbs:
                for name, database in dbs:
                    lat, with_call = await outbox_latency(server.url, database, samples)
                    p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
                    rate = await outbox_drain_rate(server.url, database, backlog)
                    async with database.transaction() as session:
                        await session.execute(sa.delete(outbox.outbox_table))
                    print(f"--- outbox on {name}")
                    print(
                        f"commit->receive   p50 {p50 * 1e3:7.3f} ms ({p50 / raw_p50:4.2f}x raw: "
                        f"{verdict(p50 <= 3 * raw_p50)} 3x)   p99 {p99 * 1e3:7.3f} ms "
                        f"({p99 / raw_p99:4.2f}x raw: {verdict(p99 <= 5 * raw_p99)} 5x)"
                    )
                    print(
                        f"drain of {backlog} backlog  {rate:9.0f} events/s "
                        f"({rate / raw_rate:4.2f}x raw batched: {verdict(rate >= 0.25 * raw_rate)} 0.25x)"
                    )
                    print(
                        f"  mean {statistics.mean(lat) * 1e3:.3f} ms; counting the commit call itself: "
                        f"p50 {percentile(with_call, 0.5) * 1e3:.3f} ms, "
                        f"p99 {percentile(with_call, 0.99) * 1e3:.3f} ms"
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--backlog", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.backlog))
