"""A NATS server that stops answering without closing the connection (SIGSTOP: paused, or a
network that drops packets) for longer than the duplicate window: readiness says so while it
lasts, events flow again within seconds once it answers, and none is stored twice."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta

import nats
import pytest
import sqlalchemy as sa

from shared import outbox
from shared.db import Database, utcnow
from shared.events import CONTENT_TYPE, event_type, new_event, stream_for
from shared.nats import NatsLink
from shared.outbox import OutboxRelay, outbox_table
from shared.testing.nats_server import NatsServer
from shared.testing.polling import wait_until
from shared.testing.system import freeze
from shared.tests.test_outbox import stream_event_ids, write_thing

pytestmark = pytest.mark.slow  # faults: servers paused, killed and restarted (seconds each)

WINDOW = 2.0  # seconds: the duplicate window of these tests' streams
PAUSE = 4 * WINDOW  # longer than the window, and than the client takes to find the server silent


@contextmanager
def paused(server: NatsServer) -> Iterator[None]:
    assert server.process is not None
    freeze(server.process)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


@pytest.fixture
async def link(own_nats_server: NatsServer) -> AsyncIterator[NatsLink]:
    service = "kit" + uuid.uuid4().hex[:6]
    made = NatsLink(
        own_nats_server.url,
        name="pause-test",
        streams=[stream_for(service, duplicate_window_seconds=WINDOW)],
    )
    await made.start()
    assert await made.wait_ready(10)
    yield made
    await made.close()


async def test_readiness_probes_that_give_up_during_a_pause_leave_the_connection_working(
    own_nats_server: NatsServer,
) -> None:
    # The client's own pings far apart (nats-py's default), so that nothing re-makes the
    # connection: it must come through the pause as it is.
    link = NatsLink(
        own_nats_server.url,
        name="pause-test",
        streams=[stream_for("kit" + uuid.uuid4().hex[:6])],
        ping_interval=120,
    )
    await link.start()
    assert await link.wait_ready(10)
    try:
        await _probes_fail_during_a_pause_and_answers_come_after(own_nats_server, link, pause=3.5)
    finally:
        await link.close()


async def test_readiness_fails_while_the_server_is_paused_and_the_connection_works_after(
    own_nats_server: NatsServer, link: NatsLink
) -> None:
    await _probes_fail_during_a_pause_and_answers_come_after(own_nats_server, link, pause=PAUSE)


async def _probes_fail_during_a_pause_and_answers_come_after(
    server: NatsServer, link: NatsLink, pause: float
) -> None:
    stream = link.streams[0]
    await link.ping()
    started = time.monotonic()
    with paused(server):
        # Each probe gives up on its answer; the late answers must not break the connection.
        for _ in range(2):
            with pytest.raises((ConnectionError, TimeoutError)):
                await asyncio.wait_for(link.ping(timeout=1.0), 1.5)
        await asyncio.sleep(pause - (time.monotonic() - started))
    resumed = time.monotonic()

    async def answers() -> bool:
        try:
            await link.ping()
            ack = await link.js.publish(f"{stream.subjects[0][:-2]}.x.y.v1", b"{}", timeout=1)
        except Exception:
            return False
        return ack.stream == stream.name

    # Long enough for nats-py's defaults to have broken it, far shorter than them to mend it.
    await wait_until(answers, timeout=15)
    print(f"NATS answered again {time.monotonic() - resumed:.2f} s after the pause ended")


async def test_events_written_during_a_pause_longer_than_the_duplicate_window_flow_once_within_seconds(
    database: Database, own_nats_server: NatsServer, link: NatsLink
) -> None:
    stream = link.streams[0]
    service = stream.subjects[0][:-2]
    relay = OutboxRelay(
        database, link, sweep_seconds=0.5, publish_timeout=1.0, duplicate_window=WINDOW, max_backoff=2.0
    )
    await relay.start()
    try:
        before = [await write_thing(database, service, n, roll_back=False) for n in range(5)]
        await wait_until(lambda: _stored(own_nats_server.url, stream.name, len(before)), timeout=10)
        with paused(own_nats_server):
            during = []
            for n in range(20):
                during.append(await write_thing(database, service, 100 + n, roll_back=False))
                await asyncio.sleep(PAUSE / 20)
            with pytest.raises((ConnectionError, TimeoutError)):
                await asyncio.wait_for(link.ping(timeout=1.0), 1.5)
        resumed = time.monotonic()
        await wait_until(lambda: _stored(own_nats_server.url, stream.name, 25), timeout=20)
        flowing_after = time.monotonic() - resumed

        async def all_marked() -> bool:
            return await relay.backlog() == 0

        await wait_until(all_marked, timeout=10)
        # Later checks find every id once: nothing published again after the window.
        await asyncio.sleep(2 * WINDOW)
        stored = await stream_event_ids(own_nats_server.url, stream.name)
    finally:
        await relay.stop()
    print(f"events flowed again {flowing_after:.2f} s after the pause ended")
    assert sorted(stored) == sorted(before + during), "an event is missing or stored twice"
    await link.ping()
    await relay.check()


async def _stored(url: str, stream: str, count: int) -> bool:
    nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
    try:
        return (await nc.jetstream(timeout=1).stream_info(stream)).state.messages >= count
    except Exception:
        return False
    finally:
        await nc.close()


async def test_a_row_whose_earlier_copy_left_the_duplicate_window_is_marked_sent_not_published_again(
    database: Database, own_nats_server: NatsServer, link: NatsLink
) -> None:
    stream = link.streams[0]
    service = stream.subjects[0][:-2]
    kind = event_type(service, "thing", "created")
    stored_once = new_event(kind, {"n": 1}, source="/test")
    never_sent = new_event(kind, {"n": 2}, source="/test")
    # An earlier attempt that reached the stream but whose ack was lost with the connection.
    await link.js.publish(
        kind, stored_once.to_bytes(), headers={"Nats-Msg-Id": stored_once.id, "Content-Type": CONTENT_TYPE}
    )
    async with database.transaction() as session:
        for event in (stored_once, never_sent):
            await outbox.add(session, event)
        await session.execute(
            sa.update(outbox_table).values(created_at=utcnow() - timedelta(seconds=10 * WINDOW))
        )
    await asyncio.sleep(WINDOW + 0.5)  # the stream has forgotten the first copy's id
    relay = OutboxRelay(database, link, sweep_seconds=0.2, publish_timeout=1.0, duplicate_window=WINDOW)
    await relay.start()
    try:

        async def drained() -> bool:
            return await relay.backlog() == 0

        await wait_until(drained, timeout=10)
    finally:
        await relay.stop()
    assert sorted(await stream_event_ids(own_nats_server.url, stream.name)) == sorted(
        [stored_once.id, never_sent.id]
    )
    assert relay.found_in_stream_total == 1
