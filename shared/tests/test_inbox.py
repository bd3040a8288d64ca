"""The idempotent consumer: redeliveries applied once, poison messages dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator

import nats
import pytest
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from shared.db import Database
from shared.events import CONTENT_TYPE, CloudEvent, event_type, new_event, stream_for
from shared.inbox import (
    ConsumerSpec,
    EventConsumer,
    PermanentEventError,
    dead_letters_table,
    inbox_table,
)
from shared.nats import NatsLink
from shared.testing.polling import wait_until
from shared.tests.conftest import received


class Harness:
    """A stream, a consumer with a scripted handler, and a way to publish raw messages."""

    def __init__(self, database: Database, url: str) -> None:
        self.database = database
        self.url = url
        self.service = "kit" + uuid.uuid4().hex[:6]
        self.spec = stream_for(self.service)
        self.link = NatsLink(url, name="consumer", streams=[self.spec])
        self.calls: Counter[str] = Counter()
        self.fail_times: dict[str, int] = {}
        self.poison: set[str] = set()
        self.fail_after_writing: set[str] = set()  # writes, then fails, once
        self.uncommittable: set[str] = set()  # applied, but the transaction holding it never commits

    async def handler(self, session, event: CloudEvent) -> None:
        self.calls[event.id] += 1
        if event.id in self.poison:
            raise ValueError("this event can never be applied")
        if self.fail_times.get(event.id, 0) > 0:
            self.fail_times[event.id] -= 1
            raise ConnectionError("transient: the database blinked")
        await session.execute(sa.insert(received).values(event_id=event.id, type=event.type))
        if event.id in self.fail_after_writing:
            self.fail_after_writing.discard(event.id)
            raise ConnectionError("transient: failed after writing")
        if event.id in self.uncommittable:
            session.info["refuse_commit"] = True  # as a deferred constraint would, at COMMIT

    async def start(self, max_deliver: int = 3, waiting: list[CloudEvent] | None = None) -> None:
        await self.link.start()
        assert await self.link.wait_ready(10)
        for event in waiting or []:  # on the stream before the consumer's first fetch
            await self.publish(event.to_bytes(), msg_id=event.id)
        self.consumer = EventConsumer(
            self.database,
            self.link,
            ConsumerSpec(
                durable=f"{self.service}-reader",
                stream=self.spec.name,
                subjects=[f"{self.service}.>"],
                handler=self.handler,
                max_deliver=max_deliver,
                nak_delays=(0.05, 0.1),
                fetch_timeout=0.2,
            ),
        )
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        with contextlib.suppress(Exception):  # an external server outlives the test: leave it clean
            await self.link.js.delete_stream(self.spec.name)
        await self.link.close()

    def event(self, n: int) -> CloudEvent:
        return new_event(event_type(self.service, "thing", "created"), {"n": n}, source="/test")

    async def publish(self, body: bytes, msg_id: str | None = None) -> None:
        headers = {"Content-Type": CONTENT_TYPE}
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        await self.link.js.publish(f"{self.service}.thing.created.v1", body, headers=headers)

    async def applied(self) -> set[str]:
        async with self.database.transaction(write=False) as s:
            return set((await s.scalars(sa.select(received.c.event_id))).all())

    async def dead_letters(self) -> list[sa.Row]:
        async with self.database.transaction(write=False) as s:
            return list((await s.execute(sa.select(dead_letters_table))).all())


async def test_event_delivered_three_times_is_applied_once(database: Database, nats_variant: str) -> None:
    h = Harness(database, nats_variant)
    await h.start()
    try:
        event = h.event(1)
        for copy in range(3):  # three stream messages carrying the same event
            await h.publish(event.to_bytes(), msg_id=f"{event.id}-copy-{copy}")

        async def three_seen() -> bool:
            return h.consumer.processed_total + h.consumer.duplicates_total == 3

        await wait_until(three_seen)
        assert h.calls[event.id] == 1
        assert await h.applied() == {event.id}
        async with database.transaction(write=False) as s:
            assert await s.scalar(sa.select(sa.func.count()).select_from(inbox_table)) == 1
    finally:
        await h.stop()


async def test_a_backlog_is_applied_together_but_a_failing_event_alone_is_undone_and_retried(
    database: Database, nats_variant: str
) -> None:
    h = Harness(database, nats_variant)
    events = [h.event(n) for n in range(20)]
    broken = events[7]
    h.fail_after_writing.add(broken.id)
    await h.start(max_deliver=5, waiting=events)
    try:

        async def all_applied() -> bool:
            return await h.applied() == {event.id for event in events}

        await wait_until(all_applied)
        assert h.calls[broken.id] == 2
        assert all(h.calls[event.id] == 1 for event in events if event is not broken)
        async with database.transaction(write=False) as s:
            assert await s.scalar(sa.select(sa.func.count()).select_from(received)) == 20
            assert await s.scalar(sa.select(sa.func.count()).select_from(inbox_table)) == 20
        assert h.consumer.processed_total == 20 and await h.dead_letters() == []
    finally:
        await h.stop()


@pytest.fixture
def commits_refused() -> Iterator[None]:
    """Sessions marked ``refuse_commit`` fail at COMMIT (the database's own refusal, in effect)."""

    def refuse(session: Session) -> None:
        # before_commit fires for savepoints too: only the transaction's own COMMIT refuses.
        if not session.in_nested_transaction() and session.info.pop("refuse_commit", False):
            raise RuntimeError("the database refused to commit")

    sa_event.listen(Session, "before_commit", refuse)
    yield
    sa_event.remove(Session, "before_commit", refuse)


async def test_a_batch_that_cannot_commit_is_applied_one_by_one_and_nothing_is_dropped(
    database: Database, nats_variant: str, commits_refused: None
) -> None:
    # The whole batch fails at COMMIT, past max_deliver: the others are applied alone, the event
    # that cannot commit is dead-lettered, and JetStream drops nothing on its own.
    h = Harness(database, nats_variant)
    events = [h.event(n) for n in range(12)]
    stuck = events[5]
    h.uncommittable.add(stuck.id)
    await h.start(max_deliver=3, waiting=events)
    try:

        async def settled() -> bool:
            return len(await h.dead_letters()) == 1 and len(await h.applied()) == 11

        await wait_until(settled)
        assert await h.applied() == {event.id for event in events if event is not stuck}
        [letter] = await h.dead_letters()
        assert letter.event_id == stuck.id and "refused to commit" in letter.error
        async with database.transaction(write=False) as s:
            assert await s.scalar(sa.select(sa.func.count()).select_from(inbox_table)) == 11
        info = await h.link.js.consumer_info(h.spec.name, f"{h.service}-reader")
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await h.stop()


async def test_transient_failures_are_retried_and_applied_once(database: Database, nats_variant: str) -> None:
    h = Harness(database, nats_variant)
    await h.start(max_deliver=5)
    try:
        event = h.event(1)
        h.fail_times[event.id] = 2
        await h.publish(event.to_bytes(), msg_id=event.id)

        async def applied() -> bool:
            return event.id in await h.applied()

        await wait_until(applied)
        assert h.calls[event.id] == 3
        assert await h.dead_letters() == []
    finally:
        await h.stop()


async def test_poison_message_is_dead_lettered_after_max_deliver_and_the_rest_still_flow(
    database: Database, nats_variant: str
) -> None:
    h = Harness(database, nats_variant)
    await h.start(max_deliver=3)
    try:
        before, poison, after = h.event(1), h.event(2), h.event(3)
        h.poison.add(poison.id)
        for event in (before, poison, after):
            await h.publish(event.to_bytes(), msg_id=event.id)

        async def dead_lettered() -> bool:
            return len(await h.dead_letters()) == 1

        await wait_until(dead_lettered)
        later = [h.event(n) for n in range(4, 14)]
        for event in later:
            await h.publish(event.to_bytes(), msg_id=event.id)

        async def rest_applied() -> bool:
            return await h.applied() == {before.id, after.id, *(e.id for e in later)}

        await wait_until(rest_applied)
        [letter] = await h.dead_letters()
        assert letter.event_id == poison.id
        assert letter.deliveries == 3
        assert "can never be applied" in letter.error
        assert h.calls[poison.id] == 3
        await asyncio.sleep(0.5)
        assert h.calls[poison.id] == 3  # terminated: never delivered again
    finally:
        await h.stop()


async def test_malformed_message_is_dead_lettered_at_once(database: Database, nats_url: str) -> None:
    h = Harness(database, nats_url)
    await h.start(max_deliver=5)
    try:
        await h.publish(b"{not json")

        async def dead_lettered() -> bool:
            return len(await h.dead_letters()) == 1

        await wait_until(dead_lettered)
        [letter] = await h.dead_letters()
        assert letter.deliveries == 1 and letter.event_id is None
        assert letter.body == b"{not json"
    finally:
        await h.stop()


async def test_permanent_error_is_dead_lettered_without_retries(database: Database, nats_url: str) -> None:
    h = Harness(database, nats_url)

    async def reject(session, event) -> None:
        h.calls[event.id] += 1
        raise PermanentEventError("payload misses enterprise_id")

    h.handler = reject  # type: ignore[method-assign]
    await h.start(max_deliver=5)
    try:
        event = h.event(1)
        await h.publish(event.to_bytes(), msg_id=event.id)

        async def dead_lettered() -> bool:
            return len(await h.dead_letters()) == 1

        await wait_until(dead_lettered)
        assert h.calls[event.id] == 1
    finally:
        await h.stop()


async def test_consumer_waits_for_a_stream_created_later(database: Database, nats_url: str) -> None:
    h = Harness(database, nats_url)
    h.link.streams = []  # the producer has not created its stream yet
    await h.start()
    try:
        await asyncio.sleep(0.3)
        producer = await nats.connect(nats_url)
        js = producer.jetstream()
        await js.add_stream(name=h.spec.name, subjects=h.spec.subjects)
        event = h.event(1)
        await js.publish(f"{h.service}.thing.created.v1", event.to_bytes())
        await producer.close()

        async def applied() -> bool:
            return event.id in await h.applied()

        await wait_until(applied)
    finally:
        await h.stop()
