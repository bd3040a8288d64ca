"""The outbox never loses an event and never publishes a rolled-back one, NATS faults included."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
import sqlalchemy as sa
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared import outbox
from shared.db import Database
from shared.events import event_type, new_event, stream_for
from shared.inbox import ConsumerSpec, EventConsumer
from shared.nats import NatsLink
from shared.outbox import OutboxRelay, outbox_table
from shared.testing.nats_server import NatsServer
from shared.testing.polling import wait_until
from shared.testing.ports import server_port
from shared.tests.conftest import received, things


async def stream_event_ids(url: str, stream: str) -> list[str]:
    """Every event id stored in a stream, in order (duplicates included)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        total = info.state.messages
        sub = await js.pull_subscribe(
            "", durable=None, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        ids: list[str] = []
        while len(ids) < total:
            for msg in await sub.fetch(min(500, total - len(ids)), timeout=5):
                ids.append(json.loads(msg.data)["id"])
                await msg.ack()
        return ids
    finally:
        await nc.close()


async def write_thing(database: Database, service: str, n: int, *, roll_back: bool) -> str:
    event = new_event(event_type(service, "thing", "created"), {"n": n}, source=f"/test/{service}")
    try:
        async with database.transaction() as session:
            await session.execute(sa.insert(things).values(name=f"thing {n}"))
            await outbox.add(session, event)
            if roll_back:
                raise RuntimeError("the use case failed after writing its event")
    except RuntimeError:
        pass
    return event.id


async def record(session, event) -> None:
    await session.execute(sa.insert(received).values(event_id=event.id, type=event.type))


@pytest.mark.slow  # a fault suite: nats-server killed and restarted twice
async def test_no_event_lost_or_doubled_while_nats_is_killed_and_restarted_twice(
    database: Database, own_nats_server: NatsServer
) -> None:
    service = "kit" + uuid.uuid4().hex[:6]
    spec = stream_for(service)
    link = NatsLink(own_nats_server.url, name="writer", streams=[spec])
    await link.start()
    assert await link.wait_ready(10)
    relay = OutboxRelay(database, link, batch_size=200, sweep_seconds=0.5, publish_timeout=1.0)
    await relay.start()
    consumer = EventConsumer(
        database,
        link,
        ConsumerSpec(durable="kit-reader", stream=spec.name, subjects=[f"{service}.>"], handler=record),
    )
    await consumer.start()

    committed: list[str] = []
    rolled_back: list[str] = []
    try:
        for n in range(2000):
            if n in (500, 1300):
                own_nats_server.kill()
            if n in (700, 1500):
                own_nats_server.start()
            if n % 10 == 7:
                rolled_back.append(await write_thing(database, service, n, roll_back=True))
            committed.append(await write_thing(database, service, n, roll_back=False))
            if n % 50 == 0:
                await asyncio.sleep(0.02)  # let the relay and the consumer run between writes

        async def all_received() -> bool:
            async with database.transaction(write=False) as s:
                return (await s.scalar(sa.select(sa.func.count()).select_from(received))) >= len(committed)

        await wait_until(all_received, timeout=60)
    finally:
        await consumer.stop()
        await relay.stop()
        await link.close()

    async with database.transaction(write=False) as session:
        got = set((await session.scalars(sa.select(received.c.event_id))).all())
        unsent = await session.scalar(
            sa.select(sa.func.count()).select_from(outbox_table).where(outbox_table.c.sent_at.is_(None))
        )
    assert got == set(committed)
    assert not got & set(rolled_back)
    assert unsent == 0
    # JetStream's duplicate window kept every event id once in the stream itself.
    stored = await stream_event_ids(own_nats_server.url, spec.name)
    assert len(stored) == len(set(stored)) == len(committed)
    assert set(stored) == set(committed)


async def test_writes_succeed_while_nats_is_down_and_drain_when_it_returns(
    database: Database, tmp_path
) -> None:
    server = NatsServer(tmp_path / "late-nats", port=server_port())  # not started yet
    service = "kit" + uuid.uuid4().hex[:6]
    spec = stream_for(service)
    link = NatsLink(server.url, name="writer", streams=[spec], connect_timeout=0.5)
    await link.start()
    relay = OutboxRelay(database, link, sweep_seconds=0.2)
    await relay.start()
    try:
        ids = [await write_thing(database, service, n, roll_back=False) for n in range(50)]
        assert await relay.backlog() == 50
        server.start()
        assert await link.wait_ready(15)

        async def drained() -> bool:
            return await relay.backlog() == 0

        await wait_until(drained, timeout=30)
        assert sorted(await stream_event_ids(server.url, spec.name)) == sorted(ids)
    finally:
        await relay.stop()
        await link.close()
        server.stop()


async def test_event_published_right_after_commit_without_waiting_for_the_sweep(
    database: Database, nats_variant: str
) -> None:
    service = "kit" + uuid.uuid4().hex[:6]
    spec = stream_for(service)
    link = NatsLink(nats_variant, name="writer", streams=[spec])
    await link.start()
    assert await link.wait_ready(10)
    relay = OutboxRelay(database, link, sweep_seconds=3600)  # only the commit can wake it
    await relay.start()
    nc = await nats.connect(nats_variant)
    try:
        sub = await nc.jetstream().subscribe(f"{service}.>", ordered_consumer=True)
        event_id = await write_thing(database, service, 1, roll_back=False)
        msg = await sub.next_msg(timeout=5)
        assert msg.headers["Nats-Msg-Id"] == event_id
        assert msg.headers["Content-Type"] == "application/cloudevents+json"
    finally:
        await nc.close()
        await relay.stop()
        await link.close()
        cleanup = await nats.connect(nats_variant)  # the external server outlives the test
        await cleanup.jetstream().delete_stream(spec.name)
        await cleanup.close()


@pytest.mark.parametrize("replicas", [3])
async def test_several_relays_on_one_database_publish_each_event_once(
    database: Database, nats_url: str, replicas: int
) -> None:
    service = "kit" + uuid.uuid4().hex[:6]
    spec = stream_for(service)
    links = [NatsLink(nats_url, name=f"replica-{i}", streams=[spec]) for i in range(replicas)]
    relays = [OutboxRelay(database, link, batch_size=50, sweep_seconds=0.05) for link in links]
    for link in links:
        await link.start()
        assert await link.wait_ready(10)
    for relay in relays:
        await relay.start()
    try:
        ids = []
        for n in range(600):
            ids.append(await write_thing(database, service, n, roll_back=False))

        async def drained() -> bool:
            return await relays[0].backlog() == 0

        await wait_until(drained, timeout=30)
    finally:
        for relay in relays:
            await relay.stop()
        for link in links:
            await link.close()
    stored = await stream_event_ids(nats_url, spec.name)
    assert sorted(stored) == sorted(ids)


class CrashAfterPublish(OutboxRelay):
    """A relay whose process dies after JetStream acked a batch but before it was marked sent."""

    crashes = 1

    async def _record(self, session, rows, outcome) -> None:
        if self.crashes:
            self.crashes -= 1
            raise ConnectionResetError("database connection lost before marking the batch sent")
        await super()._record(session, rows, outcome)


async def test_batch_republished_after_a_crash_between_ack_and_mark_is_stored_once(
    database: Database, nats_url: str
) -> None:
    service = "kit" + uuid.uuid4().hex[:6]
    spec = stream_for(service)
    link = NatsLink(nats_url, name="writer", streams=[spec])
    await link.start()
    assert await link.wait_ready(10)
    ids = [await write_thing(database, service, n, roll_back=False) for n in range(20)]
    relay = CrashAfterPublish(database, link)
    try:
        with pytest.raises(ConnectionResetError):
            await relay.drain()
        assert await relay.backlog() == 20  # published, but not known to be
        assert await relay.drain() == 20  # so it publishes them again...
        assert await relay.backlog() == 0
    finally:
        await link.close()
    stored = await stream_event_ids(nats_url, spec.name)
    assert sorted(stored) == sorted(ids)  # ...and JetStream kept one copy of each


@contextlib.asynccontextmanager
async def commit_woken_relay(database: Database, url: str) -> AsyncIterator[tuple[str, OutboxRelay]]:
    """A stream of its own (its service name) and a relay only a commit wakes (no sweep)."""
    service = "kit" + uuid.uuid4().hex[:6]
    link = NatsLink(url, name="writer", streams=[stream_for(service)])
    await link.start()
    assert await link.wait_ready(10)
    relay = OutboxRelay(database, link, sweep_seconds=3600)
    await relay.start()
    try:
        yield service, relay
    finally:
        await relay.stop()
        await link.close()


async def published_once_drained(relay: OutboxRelay) -> None:
    """Wait until the relay has nothing left, then long enough for a wrong hand-off to publish."""

    async def drained() -> bool:
        return await relay.backlog() == 0

    await wait_until(drained, timeout=10)
    await asyncio.sleep(0.5)


async def test_event_of_a_rolled_back_savepoint_is_never_published(database: Database, nats_url: str) -> None:
    async with commit_woken_relay(database, nats_url) as (service, relay):
        kind = event_type(service, "thing", "created")
        kept, dropped = new_event(kind, {"n": 1}, source="/t"), new_event(kind, {"n": 2}, source="/t")
        async with database.transaction() as session:
            await outbox.add(session, kept)
            with pytest.raises(RuntimeError):
                async with session.begin_nested():
                    await outbox.add(session, dropped)
                    raise RuntimeError("this part of the use case failed")
        await published_once_drained(relay)
    assert await stream_event_ids(nats_url, stream_for(service).name) == [kept.id]


async def test_events_of_a_released_savepoint_wait_for_their_transaction_to_commit(
    database: Database, nats_url: str
) -> None:
    # A consumer applies each event of a batch in a savepoint: releasing one commits nothing, and
    # when the transaction then fails its events must never reach the stream.
    async with commit_woken_relay(database, nats_url) as (service, relay):
        kind = event_type(service, "thing", "created")
        lost, kept = new_event(kind, {"n": 1}, source="/t"), new_event(kind, {"n": 2}, source="/t")
        with pytest.raises(RuntimeError):
            async with database.transaction() as session:
                async with session.begin_nested():
                    await outbox.add(session, lost)
                assert outbox.handoff(database).events == []  # not handed over at the savepoint
                await asyncio.sleep(0.3)  # time enough for a wrongly woken relay to publish
                raise RuntimeError("the batch failed after the savepoint was released")
        async with database.transaction() as session, session.begin_nested():
            await outbox.add(session, kept)
        await published_once_drained(relay)
    assert await stream_event_ids(nats_url, stream_for(service).name) == [kept.id]


async def test_a_transaction_with_more_events_than_the_hand_off_takes_keeps_no_bodies_and_publishes_all(
    database: Database, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "HANDOFF_LIMIT", 50)
    async with commit_woken_relay(database, nats_url) as (service, relay):
        kind = event_type(service, "thing", "created")
        events = [new_event(kind, {"n": n}, source="/t") for n in range(120)]
        async with database.transaction() as session:
            await outbox.add_many(session, events[:40])
            assert len(session.info[outbox.PENDING_KEY]) == 40
            await outbox.add_many(session, events[40:100])
            await outbox.add(session, events[100])
            await outbox.add_many(session, events[101:])
            assert len(session.info[outbox.PENDING_KEY]) == 1  # the bodies are in the table only
        await published_once_drained(relay)
    assert sorted(await stream_event_ids(nats_url, stream_for(service).name)) == sorted(e.id for e in events)


async def test_waiting_for_an_ack_ends_on_its_result_its_error_or_its_cancellation_not_on_ours() -> None:
    """The relay waits for each ack in turn: an error or a cancellation by the NATS client is read
    from the future afterwards; the relay's own cancellation (stop, a timeout) goes through."""
    loop = asyncio.get_running_loop()
    failed, cancelled, acked = loop.create_future(), loop.create_future(), loop.create_future()
    loop.call_soon(failed.set_exception, ConnectionError("no ack"))
    loop.call_soon(cancelled.cancel)
    loop.call_soon(acked.set_result, "ack")
    for future in (failed, cancelled, acked):
        await outbox._settled(future)  # returns, raising nothing
    assert isinstance(failed.exception(), ConnectionError)
    assert cancelled.cancelled() and acked.result() == "ack"

    never = loop.create_future()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await outbox._settled(never)
    waiting = asyncio.create_task(outbox._settled(loop.create_future()))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
