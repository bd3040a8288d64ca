"""``execute_together``: a use case's INSERTs, its outbox event and its idempotency record
written as one (one statement on PostgreSQL), all or nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.responses import JSONResponse

from shared import outbox
from shared.db import Database, execute_together
from shared.events import new_event
from shared.idempotency import Idempotency, idempotency_table
from shared.outbox import PENDING_KEY, outbox_table
from shared.problems import Problem
from shared.tests.conftest import things

INSERT_THING = sa.insert(things)


def event(name: str):
    return new_event("kit.thing.made.v1", {"name": name}, source="/seedbed/kit")


async def counts(database: Database) -> tuple[int, int, int]:
    async with database.transaction(write=False) as session:
        return tuple(  # type: ignore[return-value]
            [
                int(await session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
                for table in (things, outbox_table, idempotency_table)
            ]
        )


async def test_the_writes_land_together_and_the_result_is_the_last_ones(database: Database) -> None:
    keyed = Idempotency("key-1", "anchor:a1:k1", "fingerprint-1")
    response = JSONResponse({"id": 1}, status_code=201, headers={"Location": "/things/1"})
    async with database.transaction() as session:
        made = event("one")
        record = keyed.record(session, response)
        assert record is not None
        statements: list[str] = []
        engine = database.engine.sync_engine
        listener = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731
        sa.event.listen(engine, "before_cursor_execute", listener)
        try:
            result = await execute_together(
                session, [(INSERT_THING, {"id": 1, "name": "one"}), outbox.insert(session, made), record]
            )
        finally:
            sa.event.remove(engine, "before_cursor_execute", listener)
        keyed.check_recorded(result)  # the idempotency upsert stored one row
        assert len(statements) == (3 if database.is_sqlite else 1)  # on SQLite: in one trip
        assert [row["id"] for row in session.info[PENDING_KEY]] == [made.id]
    assert await counts(database) == (1, 1, 1)
    async with database.transaction(write=False) as session:
        stored = (await session.execute(sa.select(outbox_table.c.id, outbox_table.c.body))).one()
        fingerprint = await session.scalar(sa.select(idempotency_table.c.fingerprint))
    assert stored.id == made.id and stored.body == made.to_bytes()
    assert fingerprint == "fingerprint-1"


async def test_one_failing_write_fails_them_all(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(INSERT_THING, {"id": 1, "name": "first"})
    with pytest.raises(sa.exc.IntegrityError):
        async with database.transaction() as session:
            await execute_together(
                session,
                [outbox.insert(session, event("lost")), (INSERT_THING, {"id": 1, "name": "duplicate id"})],
            )
    assert await counts(database) == (1, 0, 0)


async def test_a_key_stored_by_a_concurrent_request_is_a_409_and_nothing_lands(database: Database) -> None:
    keyed = Idempotency("key-2", "anchor:a1:k1", "fingerprint-2")
    response = JSONResponse({"id": 5}, status_code=201)
    async with database.transaction() as session:
        record = keyed.record(session, response)
        assert record is not None
        keyed.check_recorded(await execute_together(session, [record]))
    with pytest.raises(Problem) as refused:
        async with database.transaction() as session:
            record = keyed.record(session, response)
            assert record is not None
            result = await execute_together(session, [(INSERT_THING, {"id": 5, "name": "five"}), record])
            keyed.check_recorded(result)
    assert refused.value.status == 409
    assert await counts(database) == (0, 0, 1)
