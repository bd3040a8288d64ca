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
event loop's thread. A booking now makes 2 trips (BEGIN, COMMIT); there its statements run
prepared (``shared.prepared``, through ``OneTripConnection.run_on_loop``). Only the buffered
cursor changes;
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
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
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


class StatementFailed(Exception):
    """Statement ``index`` of :meth:`OneTripConnection.run_on_loop` failed with ``error``."""

    def __init__(self, index: int, error: sqlite3.Error) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


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

    def run_on_loop(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> tuple[list[Any], Any, int]:
        """Run statements (SQL and positional parameters, bound by the caller) in order on the
        event loop's thread, as :meth:`run_together` runs its statements; only while
        :attr:`runs_on_loop`. Returns the last one's rows, description and row count; a failing
        statement's sqlite3 error is raised as :class:`StatementFailed`."""
        assert self.runs_on_loop, "only in a write transaction, in WAL mode"
        cursor = self._connection._conn.cursor()
        try:
            for index, (operation, parameters) in enumerate(statements):
                try:
                    cursor.execute(operation, parameters)
                except sqlite3.Error as exc:
                    raise StatementFailed(index, exc) from exc
            return cursor.fetchall(), cursor.description, cursor.rowcount
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
