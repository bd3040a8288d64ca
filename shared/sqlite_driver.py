"""SQLAlchemy's aiosqlite driver, with one trip to the connection's thread per statement,
and the writer turn that keeps this process's SQLite writers in line.

aiosqlite runs each sqlite3 call on the connection's own thread and hands the result back
to the event loop. SQLAlchemy's adapter makes three such trips for a write (open a cursor,
execute, close it) and four for a read (fetch the rows too), and the pool adds a ROLLBACK
when it takes a connection back, even after a COMMIT. A trip costs the event loop about
44 us of CPU (measured on an idle loop); a transaction of one INSERT made 8 of them, a
mentoring booking about 19 (counted over 250 requests, its outbox relay's included).

Here a statement runs open-execute-fetch-close as one function on the driver's thread: one
trip; and a connection with no transaction open is not rolled back. The one-INSERT
transaction now makes 3 trips (BEGIN, INSERT, COMMIT). Small statements run together
(``OneTripConnection.run_together``: ``shared.db.execute_together`` and ``execute_small``)
make none: in a write transaction in WAL mode they cannot wait for a lock, and run on the
event loop's thread. A booking now makes 2 trips (BEGIN, COMMIT). There, statements that nobody
watches run prepared (``prepare``, ``OneTripConnection.run_prepared``): compiled by SQLAlchemy
once, then bound, run and read with their types' own processors, without SQLAlchemy's work per
execution, which cost about as much again as SQLite's. Only the buffered cursor changes;
server-side cursors (``stream()``) keep SQLAlchemy's own, which fetches as it goes. Errors
come back as before (the same sqlite3 exception, through the same ``_handle_exception``).

It relies on private parts, pinned in ``pyproject.toml`` and checked by
``shared/tests/test_sqlite_driver.py``: aiosqlite's ``Connection._execute`` and ``_conn``,
and the adapter classes of ``sqlalchemy.dialects.sqlite.aiosqlite``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import keyword
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

Outcome = tuple[Any, list[Any], int, int | None]
Step = tuple[str, Any, bool]  # a statement, its parameters, whether they are many


def _run_steps(connection: sqlite3.Connection, steps: list[Step]) -> Outcome:
    """Statements in order (run together); the outcome is the last one's."""
    for operation, parameters, many in steps[:-1]:
        description = _run(connection, operation, parameters, many)[0]
        if description is not None:  # pragma: no cover - only the last one's rows are read
            raise sqlite3.ProgrammingError(f"rows nobody reads: {operation[:200]}")
    return _run(connection, *steps[-1])


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> Outcome:
    """The whole statement, its rows read and its cursor closed (on the driver's thread)."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statements each cost one trip to the driver's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No aiosqlite cursor is opened here (that would be a trip of its own).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _trip(self, operation: str, parameters: Any, many: bool) -> None:
        connection = self._connection
        adapter: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        held = adapter._held
        if held is not None:  # statements run together (OneTripConnection.run_together)
            held.append((operation, parameters, many))
            if len(held) < adapter._held_count:  # run with the last one
                self._description, self._rowcount, self._lastrowid = None, -1, None
                self._rows = collections.deque()
                return
            adapter._held = None
            async with adapter._execute_mutex:
                if adapter._holds_turn and adapter.wal:
                    # Here, on the event loop's thread: a handful of INSERTs in a transaction
                    # that holds the write lock cannot wait for a lock (in WAL mode readers
                    # never block the writer), so they cost less than a trip's two wake-ups.
                    outcome: Outcome = _run_steps(connection._conn, held)
                else:
                    outcome = await connection._execute(_run_steps, connection._conn, held)
        else:
            async with adapter._execute_mutex:
                outcome = await connection._execute(_run, connection._conn, operation, parameters, many)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> None:
        await self._trip(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Sequence[Any]) -> None:
        await self._trip(operation, seq_of_parameters, True)

    async def _async_soft_close(self) -> None:
        return None  # nothing is open on the driver's thread

    def close(self) -> None:
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """A connection whose write transactions take the engine's writer turn.

    SQLite has one writer. Two connections of this process that both ``BEGIN IMMEDIATE``
    would meet in SQLite's busy handler, which sleeps up to 100 ms between tries; instead
    they queue, in order, on the turn. It is held from ``BEGIN IMMEDIATE`` until the COMMIT
    or ROLLBACK has returned (or the connection is closed), which is exactly as long as SQLite
    holds its write lock: a request validates its input and renders its response without it.
    """

    __slots__ = ("_held", "_held_count", "_holds_turn", "wal")
    _cursor_cls = OneTripCursor
    dbapi: OneTripDbapi

    def __init__(self, dbapi: OneTripDbapi, connection: aiosqlite.Connection) -> None:
        super().__init__(dbapi, connection)
        self._holds_turn = False
        self._held: list[Step] | None = None
        self._held_count = 0
        self.wal = False  # in WAL mode (set when the engine connects)

    @contextlib.contextmanager
    def run_together(self, count: int) -> Iterator[None]:
        """The next ``count`` statements run together when the last of them is executed, on
        the event loop's thread; the others return at once, with no rows, no row count and no
        row id. For a handful of statements that each touch a few rows by index, in a write
        transaction, whose results nobody reads but the last's (``shared.db.execute_together``,
        ``shared.db.execute_small``): under the write lock, in WAL mode, they cannot wait for a
        lock, and cost less than a trip's two thread wake-ups. An error in any of them is raised
        by the last. (Outside a write transaction, which holds the writer turn, or outside WAL
        mode, they go to the driver's thread together, in one trip.)"""
        self._held, self._held_count = [], count
        try:
            yield
        finally:
            self._held, self._held_count = None, 0

    @property
    def runs_on_loop(self) -> bool:
        """Whether statements may run on the event loop's thread now: in a write transaction
        (the writer turn held) in WAL mode, with no trip of this connection under way."""
        return self._holds_turn and self.wal and not self._execute_mutex.locked()

    def run_prepared(self, prepared: Sequence[Prepared], values: Sequence[dict[str, Any]]) -> PreparedResult:
        """Bind and run prepared statements in order on the event loop's thread, as
        :meth:`run_together` runs its statements; only while :attr:`runs_on_loop`. The result is
        the last one's: its rows (as its type processors make them) and its row count. Errors are
        raised as SQLAlchemy raises them (``sa.exc.IntegrityError``, the sqlite3 error as ``orig``)."""
        assert self.runs_on_loop, "only in a write transaction, in WAL mode"
        steps = []
        for statement, given in zip(prepared, values, strict=True):
            try:
                steps.append((statement, statement.bind(given)))
            except Exception as exc:  # a value its type refuses (a naive datetime, say)
                raise sa.exc.StatementError(str(exc), statement.sql, given, exc) from exc
        cursor = self._connection._conn.cursor()
        try:
            for statement, parameters in steps:
                try:
                    cursor.execute(statement.sql, parameters)
                except sqlite3.Error as exc:
                    raise sa.exc.DBAPIError.instance(statement.sql, parameters, exc, sqlite3.Error) from exc
            last = steps[-1][0]
            rows = last.rows(cursor.fetchall()) if last.row is not None else []
            return PreparedResult(rows, cursor.rowcount)
        finally:
            cursor.close()

    def begin(self, *, immediate: bool) -> None:
        """``BEGIN`` or, for a writer, ``BEGIN IMMEDIATE`` after taking the turn."""
        if immediate:
            await_(self.dbapi.turn.acquire())
            self._holds_turn = True
        try:
            self.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        except BaseException:
            # A cancelled trip is not taken back: the BEGIN may still run on the driver's
            # thread, after this connection has gone back to the pool. A ROLLBACK queued behind
            # it ends that transaction there (and is nothing when there is none).
            sqlite = self._connection._connection
            if sqlite is not None:
                self._connection._tx.put_nowait((None, sqlite.rollback))
            self._release_turn()
            raise

    def _release_turn(self) -> None:
        if self._holds_turn:
            self._holds_turn = False
            self.dbapi.turn.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release_turn()

    def rollback(self) -> None:
        try:
            # The pool rolls back every connection it takes back, committed or not; with no
            # transaction open there is nothing to roll back, and no trip is made.
            if self._connection._connection is not None and self._connection._conn.in_transaction:
                super().rollback()
        finally:
            self._release_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release_turn()

    def terminate(self) -> None:
        try:
            super().terminate()
        finally:
            self._release_turn()


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DB-API module handed to ``create_async_engine(module=...)`` for SQLite URLs: one
    per engine, holding that engine's writer turn."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)
        self.turn = asyncio.Lock()

    def connect(self, *args: Any, **kwargs: Any) -> OneTripConnection:
        connection = self.aiosqlite.connect(*args, **kwargs)
        connection._thread.daemon = True  # as SQLAlchemy's own adapter does
        return OneTripConnection(self, await_(connection))


# -- prepared statements -------------------------------------------------------------------------
# A use case's few statements in a write transaction (``shared.db.execute_together`` and
# ``execute_small``) cost SQLAlchemy about as much again per execution as SQLite takes to run
# them: building an execution context, looking the compiled form up by cache key, binding,
# making a result. Here a statement is compiled by SQLAlchemy once, and each execution only
# binds with the types' own processors, runs, and processes rows with the types' own result
# processors.

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled once for one set of parameter names: its SQL; for each positional
    parameter the name it is read from (None for a value fixed in the statement), its type's
    bind processor and the fixed value; for a SELECT, the row's type and each column's result
    processor."""

    sql: str
    parameters: tuple[tuple[str | None, Processor, Any], ...]
    row: type[tuple[Any, ...]] | None = None
    processors: tuple[Processor, ...] = ()

    def bind(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            fixed if name is None else (process(values[name]) if process else values[name])
            for name, process, fixed in self.parameters
        )

    def rows(self, fetched: list[tuple[Any, ...]]) -> list[Any]:
        make, processors = self.row._make, self.processors  # type: ignore[union-attr]
        return [
            make(
                [process(value) if process else value for process, value in zip(processors, raw, strict=True)]
            )
            for raw in fetched
        ]


class PreparedResult:
    """The last prepared statement's rows (named tuples: ``row.column``) and row count, with the
    parts of SQLAlchemy's ``Result`` that a small statement's caller uses."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise sa.exc.NoResultFound("no row") if not self._rows else sa.exc.MultipleResultsFound("rows")
        return self._rows[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]


_PREPARED: dict[tuple[sa.Executable, tuple[str, ...]], Prepared | None] = {}


def prepare(dialect: sa.Dialect, statement: sa.Executable, params: Any) -> Prepared | None:
    """``statement`` (an INSERT or a SELECT) compiled for these parameter names, or None where
    only SQLAlchemy's own execution will do: Python-side column defaults to compute, parameters
    expanded or rendered at execution, a value computed at execution, RETURNING, columns that
    are not plain names. Made once per statement and names: statements are built once, at
    import (an INSERT's ``.values()`` are fixed in it)."""
    if not isinstance(statement, sa.Insert | sa.Select) or not isinstance(params, dict | None):
        return None
    params = params or {}
    key = (statement, tuple(params))
    try:
        return _PREPARED[key]
    except KeyError:
        pass
    if len(_PREPARED) >= 256:  # a few statements per service; never grow without bound
        _PREPARED.clear()
    _PREPARED[key] = prepared = _prepare(dialect, statement, params)
    return prepared


def _prepare(
    dialect: sa.Dialect, statement: sa.Insert | sa.Select[Any], params: dict[str, Any]
) -> Prepared | None:
    if isinstance(statement, sa.Insert):
        compiled = statement.compile(
            dialect=dialect, column_keys=[n for n in params if n in statement.table.c]
        )
    else:
        compiled = statement.compile(dialect=dialect)
    if (
        compiled.positiontup is None
        or compiled.literal_execute_params
        or compiled.post_compile_params
        or getattr(compiled, "insert_prefetch", None)
        or (isinstance(statement, sa.Insert) and compiled.returning)
    ):
        return None
    processors = compiled._bind_processors
    parameters: list[tuple[str | None, Processor, Any]] = []
    for name in compiled.positiontup:
        process = processors.get(name)
        bind = compiled.binds[name]
        if name in params:
            parameters.append((name, process, None))
        elif bind.required or bind.callable is not None or bind.expanding:
            return None  # a value SQLAlchemy asks for, or computes, at execution
        else:
            parameters.append((None, None, process(bind.value) if process else bind.value))
    if isinstance(statement, sa.Insert):
        return Prepared(compiled.string, tuple(parameters))
    columns = compiled._result_columns
    names = [column.keyname for column in columns]
    if len(set(names)) != len(names) or not all(
        name.isidentifier() and not keyword.iskeyword(name) for name in names
    ):
        return None
    return Prepared(
        compiled.string,
        tuple(parameters),
        collections.namedtuple("Row", names),  # type: ignore[misc]
        tuple(column.type._cached_result_processor(dialect, None) for column in columns),
    )


def watched(session: Session, connection: Connection) -> bool:
    """Whether anything listens to statements being executed (instrumentation, a test, echo):
    then every statement takes SQLAlchemy's own path, so that they see it."""
    events, dialect = connection.dispatch, connection.dialect.dispatch
    return bool(
        connection.engine.echo
        or events.before_execute
        or events.after_execute
        or events.before_cursor_execute
        or events.after_cursor_execute
        or dialect.do_execute
        or dialect.handle_error
        or session.dispatch.do_orm_execute
    )
