"""Async engine, session factories, constraint naming and the per-request session.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy
timeout; write transactions start with ``BEGIN IMMEDIATE`` so that two writers
queue for the lock instead of failing when a read transaction tries to upgrade.
PostgreSQL runs on asyncpg with a pool sized for concurrency.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from shared import prepared, sqlite_driver

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
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # (not a file, or a file system without shared memory, and SQLite keeps its journal)
        dbapi_connection.wal = cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer queues for the engine's turn first (see sqlite_driver.OneTripConnection).
        driver: sqlite_driver.OneTripConnection = conn.connection.dbapi_connection  # type: ignore[assignment]
        driver.begin(immediate=conn.get_execution_options().get("sqlite_begin") == "immediate")


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
            url,
            echo=echo,
            module=sqlite_driver.OneTripDbapi(),  # one trip to the driver's thread per statement
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **pool,
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
        # SQLite has one writer: write sessions begin with BEGIN IMMEDIATE, and this process's
        # writers take turns for it in the driver (shared/sqlite_driver.py) rather than in
        # SQLite's busy handler. (BEGIN IMMEDIATE still guards against other processes.)
        writer = self.engine.execution_options(sqlite_begin="immediate") if self.is_sqlite else self.engine
        self.read_sessions = async_sessionmaker(self.engine, expire_on_commit=False, info=self.info)
        self.write_sessions = async_sessionmaker(writer, expire_on_commit=False, info=self.info)

    def session(self, *, write: bool = True) -> AsyncSession:
        """A new session; ``write`` sessions take SQLite's write lock when they begin."""
        return (self.write_sessions if write else self.read_sessions)()

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """A session in a transaction that commits on success and rolls back on error."""
        async with self.session(write=write) as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


Write = tuple[sa.Insert, dict[str, Any]]
"""An INSERT and its parameters (the columns' values, and any other bound parameter). The
statement is built once, at import, and reused: it is compiled once (``shared.prepared``)."""


class Written(Protocol):
    """What :func:`execute_together` returns: the last write's row count."""

    @property
    def rowcount(self) -> int: ...


async def execute_together(session: AsyncSession, writes: Sequence[Write]) -> Written:
    """Run several INSERTs of one transaction; the result is the last one's.

    On PostgreSQL they are one statement (each but the last a data-modifying CTE, all of them
    run): one round trip instead of one each. On SQLite they are still statements of their
    own, run together when the last is executed (:func:`_run_together`). Either way they run
    prepared (``shared.prepared``) where they can, and a failure of any of them fails the call
    (raised as the failing statement's), and the transaction with it."""
    assert writes and not any(statement._returning for statement, _ in writes), "INSERTs, no RETURNING"
    if session.get_bind().dialect.name == "sqlite":
        return await session.run_sync(_run_together, writes)
    if len(writes) > 1:
        writes = [_combined(writes)]
    return await session.run_sync(_run_prepared, writes)


async def execute_small(
    session: AsyncSession, statement: sa.Executable, params: dict[str, Any] | None = None
) -> Small:
    """Run a statement that touches a handful of rows by index (a use case's first reads, say),
    prepared where it can be (``shared.prepared``): on SQLite as :func:`_run_together` runs it.
    Never for a statement whose size depends on the data."""
    if session.get_bind().dialect.name == "sqlite":
        return await session.run_sync(_run_together, [(statement, params)])
    return await session.run_sync(_run_prepared, [(statement, params)])


class Small(Protocol):
    """What :func:`execute_small` returns: SQLAlchemy's ``Result``, or a prepared statement's
    (``shared.prepared.PreparedResult``), which has these of its methods."""

    def all(self) -> Sequence[Any]: ...
    def first(self) -> Any: ...
    def one(self) -> Any: ...
    def scalar(self) -> Any: ...
    def scalar_one(self) -> Any: ...


def _run_prepared(session: Session, statements: prepared.Statements) -> Any:
    """PostgreSQL, in one greenlet: the statements prepared, or else through SQLAlchemy."""
    result: Any = prepared.run(session, statements)
    if result is None:
        for statement, params in statements:
            result = session.execute(statement, params)
    return result


def _run_together(session: Session, statements: prepared.Statements) -> Any:
    """SQLite, in one greenlet: in a write transaction, prepared on the event loop's thread
    where they can be; otherwise the statements go to the driver together when the last is
    executed: on the event loop's thread in a write transaction, else in one trip to the
    driver's (sqlite_driver.OneTripConnection.run_together)."""
    result: Any = prepared.run(session, statements)
    if result is not None:
        return result
    driver: sqlite_driver.OneTripConnection = session.connection().connection.dbapi_connection  # type: ignore[assignment]
    with driver.run_together(len(statements)):
        for statement, params in statements:
            result = session.execute(statement, params)
    return result


@dataclass(frozen=True, slots=True)
class _Combined:
    """PostgreSQL: writes of one shape as one statement; for each write, the parameter each of
    its values goes to (None: a parameter of its own, a WHERE's), and the Python-side column
    defaults it leaves out (inside a CTE SQLAlchemy would bind them as NULL)."""

    statement: sa.Insert
    keys: tuple[dict[str, str | None], ...]
    defaults: tuple[tuple[tuple[str, Any], ...], ...]


_COMBINED: dict[tuple[tuple[sa.Insert, tuple[str, ...]], ...], _Combined] = {}


def _combined(writes: Sequence[Write]) -> tuple[sa.Insert, dict[str, Any]]:
    """PostgreSQL: the writes as one statement (built once per shape: building and caching a
    statement costs more than running it) and its parameters. Column values become parameters
    ``w<n>_<column>``; any other parameter (a WHERE's) keeps its name."""
    shape = tuple((statement, tuple(params)) for statement, params in writes)
    combined = _COMBINED.get(shape)
    if combined is None:
        if len(_COMBINED) >= 64:  # a few shapes per service; never grow without bound
            _COMBINED.clear()
        combined = _COMBINED[shape] = _combine(shape)
    params: dict[str, Any] = {}
    for (_statement, values), keys, defaults in zip(writes, combined.keys, combined.defaults, strict=True):
        for name, value in values.items():
            key = keys[name]
            if key is not None:
                params[key] = value
            else:
                assert params.setdefault(name, value) == value, f"two values for {name}"
        for key, default in defaults:
            params[key] = default.arg(None) if default.is_callable else default.arg
    return combined.statement, params


def _combine(shape: tuple[tuple[sa.Insert, tuple[str, ...]], ...]) -> _Combined:
    parts, keys, defaults = [], [], []
    for n, (statement, names) in enumerate(shape):
        columns = statement.table.c
        given = set(names) | set(statement._values or ())
        left_out = [c for c in columns if c.default is not None and c.key not in given]
        for column in left_out:
            if not (column.default.is_scalar or column.default.is_callable):  # type: ignore[union-attr]
                raise ValueError(f"execute_together: give {column} a value (its default runs in SQL)")
        bound = [name for name in names if name in columns] + [column.key for column in left_out]
        parts.append(
            statement.values({name: sa.bindparam(f"w{n}_{name}", type_=columns[name].type) for name in bound})
        )
        keys.append({name: (f"w{n}_{name}" if name in columns else None) for name in names})
        defaults.append(tuple((f"w{n}_{column.key}", column.default) for column in left_out))
    *first, last = parts
    statement = last.add_cte(*(part.cte(f"write_{n}") for n, part in enumerate(first)))
    return _Combined(statement, tuple(keys), tuple(defaults))


async def request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The session of one request: committed once after the endpoint, rolled back on error.

    Use-case code never commits; a rejected request leaves nothing half-written.
    """
    database: Database = request.app.state.database
    write = request.method not in READ_METHODS
    async with database.session(write=write) as session:
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

    def bind_processor(self, dialect: sa.Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite: the text SQLAlchemy's DATETIME stores ("2027-03-29 08:00:00.000000": its
        # storage format, so that stored times compare as text), made in one call instead of
        # a %-format of seven fields; a booking binds sixteen times.
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given where an aware UTC time is required")
            if value.tzinfo is not UTC:
                value = value.astimezone(UTC)
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")

        return process


def utcnow() -> datetime:
    return datetime.now(UTC)


# Tables every service has (outbox, inbox, dead letters, idempotency keys) live here;
# each service copies them into its own metadata and creates them in its first migration.
KIT_METADATA = new_metadata()

BigIntegerKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
