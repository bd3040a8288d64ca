"""The SQLite driver: one trip to the driver's thread per statement, and the writer turn."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa

from shared.db import Database, execute_small, execute_together, new_metadata
from shared.testing.databases import sqlite_write_lock_held

items = sa.Table(
    "items",
    new_metadata(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}", pool_size=20)
    async with db.engine.begin() as conn:
        await conn.run_sync(items.metadata.create_all)
    yield db
    await db.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The functions sent to aiosqlite's thread, in order."""
    sent: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    yield sent


def write_lock_free(database: Database) -> bool:
    return not sqlite_write_lock_held(database.url)


async def test_a_write_transaction_costs_one_trip_per_statement(database: Database, trips: list[str]) -> None:
    async with database.transaction() as session:  # warm: the pool's first connection
        await session.execute(sa.insert(items).values(id=1, name="warm"))
    trips.clear()
    async with database.transaction() as session:
        await session.execute(sa.insert(items).values(id=2, name="a"))
        rows = (await session.execute(sa.select(items.c.name).order_by(items.c.id))).scalars().all()
    assert rows == ["warm", "a"]
    # BEGIN IMMEDIATE, INSERT, SELECT (rows and all), COMMIT; and no ROLLBACK when the pool
    # takes back a connection whose transaction is already over.
    assert trips == ["_run", "_run", "_run", "commit"]


async def test_rows_counts_and_errors_come_back_as_before(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(sa.insert(items), [{"id": n, "name": f"n{n}"} for n in range(1, 6)])
        updated = await session.execute(sa.update(items).where(items.c.id > 3).values(name="big"))
        assert updated.rowcount == 2
    with pytest.raises(sa.exc.IntegrityError):
        async with database.transaction() as session:
            await session.execute(sa.insert(items).values(id=6, name="kept?"))
            await session.execute(sa.insert(items).values(id=1, name="duplicate"))
    async with database.transaction(write=False) as session:
        names = (await session.execute(sa.select(items.c.name).order_by(items.c.id))).scalars().all()
        streamed = [row.id async for row in await session.stream(sa.select(items.c.id).order_by(items.c.id))]
    assert names == ["n1", "n2", "n3", "big", "big"]  # the failed transaction left nothing
    assert streamed == [1, 2, 3, 4, 5]


async def test_the_writer_turn_is_held_from_begin_to_the_end_of_commit(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    turn = database.engine.dialect.dbapi.turn
    lock_free_when_taken: list[bool] = []
    take = turn.acquire

    async def acquire() -> bool:
        taken = await take()
        lock_free_when_taken.append(write_lock_free(database))
        return taken

    monkeypatch.setattr(turn, "acquire", acquire)
    session = database.session()
    try:
        await session.execute(sa.insert(items).values(id=1, name="a"))
        assert turn.locked() and not write_lock_free(database)
        waiting = asyncio.create_task(_insert(database, 2))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # queued for the turn, not in SQLite's busy handler
        await session.commit()
        await asyncio.wait_for(waiting, 5)
    finally:
        await session.close()
    # Each writer found SQLite's write lock free when its turn came: the one before it had
    # committed, not merely started to.
    assert lock_free_when_taken == [True, True]
    assert not turn.locked() and write_lock_free(database)


async def test_a_write_session_that_runs_no_statement_never_takes_the_turn(database: Database) -> None:
    turn = database.engine.dialect.dbapi.turn
    async with database.transaction():  # a request refused before its first statement
        assert not turn.locked()
    holder = database.session()
    try:
        await holder.execute(sa.insert(items).values(id=1, name="a"))
        assert turn.locked()
        async with database.session() as idle:  # would wait for the holder if it took the turn
            await asyncio.wait_for(idle.commit(), 5)
    finally:
        await holder.rollback()
        await holder.close()
    assert not turn.locked()


async def test_failed_and_cancelled_writers_hand_the_turn_on(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as session:
            await session.execute(sa.insert(items).values(id=1, name="rolled back"))
            raise RuntimeError("the use case failed")

    holder = database.session()
    await holder.execute(sa.insert(items).values(id=2, name="holder"))
    queued = asyncio.create_task(_insert(database, 3))
    await asyncio.sleep(0.05)
    queued.cancel()  # cancelled while waiting for the turn
    with pytest.raises(asyncio.CancelledError):
        await queued
    await holder.commit()
    await holder.close()

    await asyncio.wait_for(asyncio.gather(*(_insert(database, n) for n in range(10, 40))), 10)
    async with database.transaction(write=False) as session:
        ids = (await session.execute(sa.select(items.c.id).order_by(items.c.id))).scalars().all()
    assert ids == [2, *range(10, 40)]
    assert write_lock_free(database)


async def _insert(database: Database, item_id: int) -> None:
    async with database.transaction() as session:
        await session.execute(sa.insert(items).values(id=item_id, name=f"n{item_id}"))
        await asyncio.sleep(0)


async def test_writes_run_together_make_no_trip_and_a_failure_in_any_fails_the_call(
    database: Database, trips: list[str]
) -> None:
    insert = sa.insert(items)
    async with database.transaction() as session:
        await session.execute(insert, {"id": 1, "name": "first"})
        trips.clear()
        result = await execute_together(
            session, [(insert, {"id": 2, "name": "b"}), (insert, {"id": 3, "name": "c"})]
        )
        # In a write transaction (the writer turn held) they run on the loop: no trip at all.
        assert trips == [] and result.rowcount == 1
    with pytest.raises(sa.exc.IntegrityError):
        async with database.transaction() as session:
            await execute_together(
                session,
                [
                    (insert, {"id": 4, "name": "d"}),
                    (insert, {"id": 1, "name": "taken"}),
                    (insert, {"id": 5, "name": "e"}),
                ],
            )
    async with database.transaction() as session:  # the connection is usable again, writes one by one
        await session.execute(insert, {"id": 6, "name": "f"})
        ids = (await session.execute(sa.select(items.c.id).order_by(items.c.id))).scalars().all()
    assert ids == [1, 2, 3, 6]


async def test_outside_wal_mode_writes_run_together_in_one_trip_instead(
    tmp_path: Path, trips: list[str]
) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'journal.db'}")
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(items.metadata.create_all)
        async with database.transaction() as session:
            driver = (await (await session.connection()).get_raw_connection()).dbapi_connection
            assert driver.wal  # what the kit sets up
            driver.wal = False  # as if the file system had refused WAL mode
            trips.clear()
            insert = sa.insert(items)
            await execute_together(
                session, [(insert, {"id": 1, "name": "a"}), (insert, {"id": 2, "name": "b"})]
            )
            assert trips == ["_run_steps"]
    finally:
        await database.dispose()


async def test_a_writer_cancelled_at_any_moment_leaves_the_next_writer_a_clean_connection(
    database: Database,
) -> None:
    """A cancelled trip still runs on the driver's thread: a BEGIN IMMEDIATE cancelled on its way
    must not leave its connection in a transaction (holding the write lock) when the pool takes it
    back. (Found cancelling writers at random moments: the next write on the pooled connection
    failed with "cannot start a transaction within a transaction", or waited out the busy timeout.)"""
    rng = random.Random(7)
    insert = sa.insert(items)

    async def writer(first: int) -> None:
        n = first
        while True:
            async with database.transaction() as session:
                await session.execute(insert, {"id": n, "name": "cancelled"})
            n += 1

    for attempt in range(200):
        task = asyncio.create_task(writer(1_000_000 * (attempt + 1)))
        await asyncio.sleep(rng.random() * 0.003)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with asyncio.timeout(3):  # the busy timeout is 30 s: waiting it out fails here
            async with database.transaction() as session:
                await session.execute(insert, {"id": attempt + 1, "name": "after"})
    async with database.transaction(write=False) as session:
        after = await session.scalar(sa.select(sa.func.count()).where(items.c.name == "after"))
    assert after == 200


async def test_a_small_statement_makes_no_trip_in_a_write_transaction_and_one_in_a_read(
    database: Database, trips: list[str]
) -> None:
    query = sa.select(items.c.name).where(items.c.id == sa.bindparam("id"))
    async with database.transaction() as session:
        await session.execute(sa.insert(items), {"id": 1, "name": "a"})
        trips.clear()
        assert (await execute_small(session, query, {"id": 1})).scalar_one() == "a"
        assert trips == []  # under the write lock: on the event loop
    async with database.transaction(write=False) as session:
        await session.execute(sa.select(1))
        trips.clear()
        assert (await execute_small(session, query, {"id": 1})).scalar_one() == "a"
        assert trips == ["_run_steps"]  # a reader holds no lock: on the driver's thread
