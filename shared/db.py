"""Async engine, session factories, constraint naming and the per-request session.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy
timeout; write transactions start with ``BEGIN IMMEDIATE`` so that two writers
queue for the lock instead of failing when a read transaction tries to upgrade.
PostgreSQL runs on asyncpg with a pool sized for concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_metadata() -> sa.MetaData:
    """A MetaData with the project's constraint naming convention."""
    return sa.MetaData(naming_convention=NAMING_CONVENTION)


def is_sqlite_url(url: str) -> bool:
    return url.startswith("sqlite")


def _configure_sqlite(engine: AsyncEngine) -> None:
    """PRAGMAs on every new connection, and BEGIN emitted by us (SQLAlchemy's documented recipe
    for pysqlite/aiosqlite transactions): IMMEDIATE for write sessions, so that two writers queue
    for the lock instead of failing when a read transaction tries to upgrade."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_begin") == "immediate"
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_private_sqlite_file(url: str) -> None:
    """Create the database file of a SQLite URL readable by its owner only (0600), if it does
    not exist yet; SQLite would make it 0644, and gives its -wal and -shm files the mode of
    the database file."""
    path = sa.engine.make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    # There already, or its folder is not (SQLite says so on connecting): nothing to do.
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False, pooled: bool = True) -> AsyncEngine:
    """Create the async engine for a service database URL (``pooled=False`` for one-shot jobs)."""
    pool: dict[str, Any] = (
        {"pool_size": pool_size, "max_overflow": pool_size * 2} if pooled else {"poolclass": NullPool}
    )
    if is_sqlite_url(url):
        create_private_sqlite_file(url)
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **pool
        )
        _configure_sqlite(engine)
        return engine
    if pooled:
        pool |= {"pool_pre_ping": True, "pool_recycle": 1800}
    return create_async_engine(url, echo=echo, **pool)


class Database:
    """One service's database: the engine and its read and write session factories."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size, echo=echo)
        self.is_sqlite = is_sqlite_url(url)
        # Kit components attach per-database state here (the outbox hand-off);
        # every session's ``info`` points back to this Database.
        self.extensions: dict[str, Any] = {}
        self.info: dict[str, Any] = {"database": self}
        # SQLite has one writer: write sessions take its lock when they begin (BEGIN IMMEDIATE).
        writer = self.engine.execution_options(sqlite_begin="immediate") if self.is_sqlite else self.engine
        self.sqlite_writers = asyncio.Lock()
        self.read_sessions = async_sessionmaker(self.engine, expire_on_commit=False, info=self.info)
        self.write_sessions = async_sessionmaker(writer, expire_on_commit=False, info=self.info)

    def session(self, *, write: bool = True) -> AsyncSession:
        """A new session; ``write`` sessions take SQLite's write lock when they begin."""
        return (self.write_sessions if write else self.read_sessions)()

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """A session in a transaction that commits on success and rolls back on error."""
        async with self.writing(write), self.session(write=write) as session, session.begin():
            yield session

    @asynccontextmanager
    async def writing(self, write: bool = True) -> AsyncIterator[None]:
        """SQLite: this process's write transactions queue here, first come first served;
        SQLite's own busy handler polls and lets a late writer overtake, so under load an
        early one could wait past the busy timeout. (BEGIN IMMEDIATE still guards against
        other processes.) Nothing to do on PostgreSQL, or for a read."""
        if not (write and self.is_sqlite):
            yield
            return
        async with self.sqlite_writers:
            yield

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


async def request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The session of one request: committed once after the endpoint, rolled back on error.

    Use-case code never commits; a rejected request leaves nothing half-written.
    """
    database: Database = request.app.state.database
    write = request.method not in READ_METHODS
    async with database.writing(write), database.session(write=write) as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": commit before the response is sent, so a 2xx means committed.
SessionDep = Annotated[AsyncSession, Depends(request_session, scope="function")]


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC time is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# Tables every service has (outbox, inbox, dead letters, idempotency keys) live here;
# each service copies them into its own metadata and creates them in its first migration.
KIT_METADATA = new_metadata()

BigIntegerKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_of(session: AsyncSession, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT in the session's dialect, which offers ``on_conflict_do_update`` and
    ``on_conflict_do_nothing``."""
    return (postgresql.insert if is_postgres(session) else sqlite.insert)(table)


async def store_if_newer(
    session: AsyncSession,
    table: sa.Table,
    values: dict[str, Any],
    *,
    version: str = "version",
    update: Sequence[str] | None = None,
) -> bool:
    """Insert ``values``, or update the row with the same primary key (``update``: the columns to
    change, by default all but the key) only when ``values[version]`` is newer than its stored one,
    in one statement so that replicas applying the same events race safely; True when written."""
    key = list(table.primary_key)
    insert = insert_of(session, table).values(values)
    changed = update if update is not None else [name for name in values if name not in table.primary_key.c]
    statement = insert.on_conflict_do_update(
        index_elements=key,
        set_={name: insert.excluded[name] for name in changed},
        where=table.c[version] < insert.excluded[version],
    )
    result: CursorResult[Any] = await session.execute(statement)  # type: ignore[assignment]
    return result.rowcount > 0
