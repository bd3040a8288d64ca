"""The database kit: SQLite settings, serialized writers, UTC times."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from shared.db import Database, UtcDateTime, new_metadata
from shared.testing.databases import DatabaseFactory

stamps = sa.Table(
    "stamps",
    new_metadata(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UtcDateTime, nullable=False),
)
counter = sa.Table(
    "counter",
    stamps.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("value", sa.Integer, nullable=False),
)


@pytest.fixture
async def database(db_backend, database_factory):
    async def prepare(url: str) -> None:
        db = Database(url)
        async with db.engine.begin() as conn:
            await conn.run_sync(stamps.metadata.create_all)
        await db.dispose()

    db = Database(await database_factory.create(db_backend, "dbkit", prepare), pool_size=20)
    yield db
    await db.dispose()


async def test_times_come_back_aware_utc_whatever_zone_they_went_in(database: Database) -> None:
    paris = datetime(2027, 3, 28, 3, 30, tzinfo=timezone(timedelta(hours=2)))
    async with database.transaction() as session:
        await session.execute(sa.insert(stamps).values(id=1, at=paris))
    async with database.transaction(write=False) as session:
        back = await session.scalar(sa.select(stamps.c.at))
    assert back == paris and back.tzinfo is not None and back.utcoffset() == timedelta(0)
    assert back == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)


@settings(deadline=None)  # a behaviour, not a timing: a loaded machine must not fail it
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-9, minutes=-30)), timezone(timedelta(hours=14))]
        ),
    )
)
def test_sqlite_stores_the_text_of_sqlalchemys_datetime_storage_format(moment: datetime) -> None:
    """Stored times compare as text in SQL: the kit's type writes exactly what SQLAlchemy's
    DATETIME writes for the UTC time, microseconds always included."""
    dialect = sqlite.dialect()
    ours = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = sqlite.DATETIME().bind_processor(dialect)
    assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None))


async def test_naive_time_is_refused(database: Database) -> None:
    with pytest.raises(sa.exc.StatementError):
        async with database.transaction() as session:
            await session.execute(sa.insert(stamps).values(id=2, at=datetime(2027, 1, 1)))


async def test_concurrent_read_modify_write_transactions_do_not_lose_updates(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(sa.insert(counter).values(id=1, value=0))

    async def increment() -> None:
        for attempt in range(50):
            try:
                async with database.transaction() as session:
                    query = sa.select(counter.c.value).where(counter.c.id == 1)
                    if not database.is_sqlite:
                        query = query.with_for_update()
                    value = await session.scalar(query)
                    await asyncio.sleep(0)
                    await session.execute(sa.update(counter).values(value=value + 1))
                return
            except sa.exc.OperationalError:  # pragma: no cover - would mean writers were not serialized
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("gave up")

    await asyncio.gather(*(increment() for _ in range(30)))
    async with database.transaction(write=False) as session:
        assert await session.scalar(sa.select(counter.c.value)) == 30


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(database: Database) -> None:
    if not database.is_sqlite:
        pytest.skip("SQLite settings")
    async with database.transaction(write=False) as session:
        assert await session.scalar(sa.text("PRAGMA journal_mode")) == "wal"
        assert await session.scalar(sa.text("PRAGMA foreign_keys")) == 1
        assert await session.scalar(sa.text("PRAGMA busy_timeout")) >= 5000


@pytest.mark.postgres
async def test_the_database_factory_drops_every_database_it_made(tmp_path) -> None:
    import asyncpg

    from shared.testing.databases import _asyncpg_dsn, postgres_admin_url

    admin = postgres_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL variant skipped: SEEDBED_TEST_POSTGRES_URL is not set")

    async def nothing(url: str) -> None:
        return None

    factory = DatabaseFactory(tmp_path, admin)
    made = [await factory.create("postgres", "dropme", nothing) for _ in range(6)]
    assert len(set(made)) == 6
    conn = await asyncpg.connect(_asyncpg_dsn(admin))
    try:
        pattern = f"seedbed_t%_{factory.run_id}_%"
        query = "SELECT count(*) FROM pg_database WHERE datname LIKE $1"
        before = await conn.fetchval(query, pattern)
        await factory.drop_all()
        after = await conn.fetchval(query, pattern)
    finally:
        await conn.close()
    assert (before, after) == (7, 0)  # six databases and their template


async def test_a_new_sqlite_database_and_its_wal_files_are_readable_by_their_owner_only(tmp_path) -> None:
    path = tmp_path / "private.db"
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with database.transaction() as session:
            await session.execute(sa.text("CREATE TABLE notes (body TEXT)"))
            await session.execute(sa.text("INSERT INTO notes VALUES ('confidential')"))
        made = sorted(p.name for p in tmp_path.iterdir())
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    finally:
        await database.dispose()
    assert made == ["private.db", "private.db-shm", "private.db-wal"]
    assert modes == dict.fromkeys(made, 0o600)
