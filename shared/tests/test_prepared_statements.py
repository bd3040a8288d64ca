"""A use case's INSERTs and small reads run prepared, without SQLAlchemy's work per execution
(``shared.prepared``; on SQLite in a write transaction): what lands, and what is read, is
exactly what SQLAlchemy would have written and read; SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from shared.db import Database, UtcDateTime, create_engine, execute_small, execute_together, new_metadata
from shared.idempotency import Idempotency, idempotency_table
from shared.testing.databases import DatabaseFactory

metadata = new_metadata()
records = sa.Table(
    "records",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("tags", sa.JSON, nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
)
defaulted = sa.Table(
    "defaulted",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False, default="python-side"),
)
INSERT_RECORD = sa.insert(records)
INSERT_DEFAULTED = sa.insert(defaulted)
WHEN = datetime(2027, 3, 28, 0, 30, tzinfo=UTC)


async def _create_tables(url: str) -> None:
    engine = create_engine(url, pooled=False)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.run_sync(idempotency_table.create)
    await engine.dispose()


@pytest.fixture
async def database(db_backend: str, database_factory: DatabaseFactory) -> AsyncIterator[Database]:
    db = Database(await database_factory.create(db_backend, "prepared", _create_tables))
    yield db
    await db.dispose()


@pytest.fixture
def executions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The statements that went through SQLAlchemy's ``Session.execute``."""
    seen: list[Any] = []
    real = Session.execute

    def counted(self: Session, statement: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(statement)
        return real(self, statement, *args, **kwargs)

    monkeypatch.setattr(Session, "execute", counted)
    yield seen


def record(n: int, **changes: Any) -> dict[str, Any]:
    values = {
        "id": uuid.UUID(int=n),
        "at": WHEN + timedelta(minutes=n),
        "tags": ["legal", {"n": n}],
        "body": bytes([n]) * 3,
        "note": None,
    }
    return values | changes


async def stored(database: Database) -> list[Any]:
    async with database.transaction(write=False) as session:
        return list((await session.execute(sa.select(records).order_by(records.c.at))).all())


RAW = sa.text(
    "SELECT CAST(id AS TEXT), CAST(at AS TEXT), CAST(tags AS TEXT), body, note, tries"
    " FROM records ORDER BY at"
)


async def raw_rows(database: Database) -> list[tuple[Any, ...]]:
    """The rows as the database holds them (the text and bytes the types wrote)."""
    async with database.transaction(write=False) as session:
        return [tuple(row) for row in await session.execute(RAW)]


async def test_inserts_run_together_land_as_sqlalchemy_writes_them(
    database: Database, executions: list[Any]
) -> None:
    async with database.transaction() as session:
        await session.execute(sa.select(1))  # the transaction begins; what follows is the use case's
        executions.clear()
        result = await execute_together(session, [(INSERT_RECORD, record(1)), (INSERT_RECORD, record(2))])
        assert executions == []  # neither went through SQLAlchemy's execution
        assert result.rowcount == 1
    rows = await stored(database)
    assert [row.id for row in rows] == [uuid.UUID(int=1), uuid.UUID(int=2)]
    first = rows[0]
    assert first.at == WHEN + timedelta(minutes=1) and first.at.tzinfo is UTC
    assert first.tags == ["legal", {"n": 1}] and first.body == b"\x01\x01\x01"
    assert first.note is None and first.tries == 0  # the server default applies
    prepared = await raw_rows(database)
    async with database.transaction() as session:  # the same rows again, through SQLAlchemy
        await session.execute(sa.delete(records))
        for n in (1, 2):
            await session.execute(INSERT_RECORD, record(n))
    assert await raw_rows(database) == prepared


async def test_a_failing_insert_is_an_integrity_error_naming_it_and_nothing_lands(database: Database) -> None:
    async with database.transaction() as session:
        await execute_together(session, [(INSERT_RECORD, record(1))])
    with pytest.raises(sa.exc.IntegrityError) as failed:
        async with database.transaction() as session:
            await execute_together(
                session, [(INSERT_RECORD, record(2)), (INSERT_RECORD, record(1)), (INSERT_RECORD, record(3))]
            )
    assert isinstance(failed.value.orig, database.engine.dialect.loaded_dbapi.IntegrityError)
    assert "INSERT INTO records" in str(failed.value.statement)
    assert [row.id for row in await stored(database)] == [uuid.UUID(int=1)]
    async with database.transaction() as session:  # the connection is fine for the next writer
        await execute_together(session, [(INSERT_RECORD, record(4))])
    assert len(await stored(database)) == 2


async def test_a_value_its_type_refuses_is_a_statement_error_and_nothing_lands(database: Database) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        async with database.transaction() as session:
            await execute_together(
                session, [(INSERT_RECORD, record(1)), (INSERT_RECORD, record(2, at=datetime(2027, 1, 1)))]
            )
    assert await stored(database) == []


async def test_python_side_defaults_are_applied(database: Database, executions: list[Any]) -> None:
    async with database.transaction() as session:
        await session.execute(sa.select(1))
        executions.clear()
        await execute_together(session, [(INSERT_RECORD, record(1)), (INSERT_DEFAULTED, {"id": 1})])
        # SQLite: one of them needs SQLAlchemy to compute a default, so both go its way, together.
        # PostgreSQL: the kit gives the default to the one statement they are combined into.
        assert len(executions) == (2 if database.is_sqlite else 0)
    async with database.transaction(write=False) as session:
        assert await session.scalar(sa.select(defaulted.c.kind)) == "python-side"
        assert await session.scalar(sa.select(sa.func.count()).select_from(records)) == 1


async def test_a_listener_on_statements_sees_every_insert(database: Database) -> None:
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(database.engine.sync_engine, "before_cursor_execute", listener)
    try:
        async with database.transaction() as session:
            await execute_together(session, [(INSERT_RECORD, record(1)), (INSERT_RECORD, record(2))])
    finally:
        sa.event.remove(database.engine.sync_engine, "before_cursor_execute", listener)
    # (on PostgreSQL both are in one statement)
    assert sum(statement.count("INSERT INTO records") for statement in seen) == 2


async def test_a_read_transaction_never_runs_them_on_the_loop(
    database: Database, executions: list[Any]
) -> None:
    if not database.is_sqlite:
        pytest.skip("SQLite's event-loop rule")
    async with database.transaction(write=False) as session:
        await session.execute(sa.select(1))
        executions.clear()
        await execute_together(session, [(INSERT_RECORD, record(1))])
        # No writer turn held: it may have to wait for SQLite's lock, so it goes to the
        # driver's thread, through SQLAlchemy.
        assert len(executions) == 1


async def test_an_idempotency_record_counts_no_row_when_a_fresh_one_is_there(database: Database) -> None:
    keyed = Idempotency("key-1", "staff::t", "fingerprint")
    response = JSONResponse({"id": 1}, status_code=201)
    async with database.transaction() as session:
        record_write = keyed.record(session, response)
        assert record_write is not None
        assert (await execute_together(session, [record_write])).rowcount == 1
    async with database.transaction() as session:
        record_write = keyed.record(session, response)
        assert record_write is not None
        assert (await execute_together(session, [record_write])).rowcount == 0  # the upsert's WHERE


READ = (
    sa.select(records.c.id, records.c.at, records.c.tags, records.c.body, records.c.note, records.c.tries)
    .where(records.c.at >= sa.bindparam("since"))
    .order_by(records.c.at)
)


async def test_a_small_read_in_a_write_transaction_reads_what_sqlalchemy_reads(
    database: Database, executions: list[Any]
) -> None:
    async with database.transaction() as session:
        await execute_together(session, [(INSERT_RECORD, record(n)) for n in (1, 2, 3)])
    async with database.transaction() as session:
        expected = (await session.execute(READ, {"since": WHEN + timedelta(minutes=2)})).all()
        executions.clear()
        result = await execute_small(session, READ, {"since": WHEN + timedelta(minutes=2)})
        assert executions == []  # prepared: not through SQLAlchemy's execution
        rows = result.all()
    assert [tuple(row) for row in rows] == [tuple(row) for row in expected]
    assert [type(value) for value in rows[0]] == [type(value) for value in expected[0]]
    assert rows[0].id == uuid.UUID(int=2) and rows[0].at.tzinfo is UTC and rows[1].tags == ["legal", {"n": 3}]
    async with database.transaction() as session:
        one = sa.select(records.c.note).where(records.c.id == sa.bindparam("id"))
        assert (await execute_small(session, one, {"id": uuid.UUID(int=1)})).scalar_one() is None
        assert (await execute_small(session, one, {"id": uuid.UUID(int=9)})).first() is None
        with pytest.raises(sa.exc.NoResultFound):
            (await execute_small(session, one, {"id": uuid.UUID(int=9)})).one()


async def test_reads_that_need_sqlalchemy_take_its_path(database: Database, executions: list[Any]) -> None:
    async with database.transaction() as session:
        await execute_together(session, [(INSERT_RECORD, record(n)) for n in (1, 2)])
    expanding = sa.select(records.c.id).where(records.c.id.in_(sa.bindparam("ids", expanding=True)))
    # Names a named tuple cannot carry as they are (SQLAlchemy's Row can).
    unnamed = sa.select(sa.func.count().label("_count"), sa.func.max(records.c.at).label("class"))
    async with database.transaction() as session:
        await session.execute(sa.select(1))
        executions.clear()
        found = await execute_small(session, expanding, {"ids": [uuid.UUID(int=1), uuid.UUID(int=2)]})
        assert sorted(found.scalars()) == [uuid.UUID(int=1), uuid.UUID(int=2)]
        counted = (await execute_small(session, unnamed)).one()
        assert counted[0] == 2 and counted[1] == WHEN + timedelta(minutes=2)
        assert len(executions) == 2
