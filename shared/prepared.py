"""Prepared statements: a use case's few small statements without SQLAlchemy's work per execution.

For a statement that touches a handful of rows by index, SQLAlchemy's engine costs about as
much again as the database takes to run it: an execution context, the compiled form looked up
by cache key, binding, a result object. A booking spent more there than in SQLite. Here a
statement is compiled by SQLAlchemy once (per statement and set of parameter names), and each
execution only binds with its types' own bind processors, runs on the driver, and reads rows
through its types' own result processors, as named tuples (``row.column``).

Only where nothing is lost by it: statements built once, at import (``shared.db.Write``); an
INSERT or a SELECT with no Python-side column defaults, no parameter expanded or rendered at
execution, plain column names; nobody listening to statements (instrumentation, echo, a test's
listener: then SQLAlchemy's own path runs, so that they see every statement). Errors are raised
as SQLAlchemy raises them (``sa.exc.IntegrityError`` and the like, the driver's error as
``orig``).

- SQLite: in a write transaction in WAL mode, on the event loop's thread
  (``sqlite_driver.OneTripConnection.run_on_loop``).
- PostgreSQL: through SQLAlchemy's asyncpg cursor itself (its transaction start, prepared
  statement cache and error translation), without the engine above it.
"""

from __future__ import annotations

import collections
import keyword
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.util.concurrency import await_

from shared import sqlite_driver

Processor = Callable[[Any], Any] | None


@dataclass(slots=True)
class Prepared:
    """A statement compiled once for one set of parameter names: its SQL; for each positional
    parameter the name it is read from (None for a value fixed in the statement), its type's
    bind processor and the fixed value; for a SELECT, the row's type and its columns' types,
    whose result processors are looked up at the first execution (they may depend on the type
    the driver reports)."""

    sql: str
    parameters: tuple[tuple[str | None, Processor, Any], ...]
    row: type[tuple[Any, ...]] | None = None
    types: tuple[sa.types.TypeEngine[Any], ...] = ()
    dialect: sa.Dialect | None = None  # a SELECT's
    processors: tuple[Processor, ...] | None = None

    def bind(self, values: dict[str, Any]) -> tuple[Any, ...]:
        try:
            return tuple(
                fixed if name is None else (process(values[name]) if process else values[name])
                for name, process, fixed in self.parameters
            )
        except Exception as exc:  # a value its type refuses (a naive datetime, say)
            raise sa.exc.StatementError(str(exc), self.sql, values, exc) from exc

    def rows(
        self, fetched: Sequence[Sequence[Any]], description: Sequence[Sequence[Any]] | None
    ) -> list[Any]:
        if self.row is None or not fetched:
            return []
        processors = self.processors
        if processors is None:
            assert self.dialect is not None and description is not None
            processors = self.processors = tuple(
                type_._cached_result_processor(self.dialect, column[1])
                for type_, column in zip(self.types, description, strict=True)
            )
        make = self.row._make  # type: ignore[attr-defined]
        return [
            make(
                [process(value) if process else value for process, value in zip(processors, raw, strict=True)]
            )
            for raw in fetched
        ]


class PreparedResult:
    """The last statement's rows and row count, with the parts of SQLAlchemy's ``Result`` that
    a small statement's caller uses."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if not self._rows:
            raise sa.exc.NoResultFound("No row was found when one was required")
        if len(self._rows) > 1:
            raise sa.exc.MultipleResultsFound("Multiple rows were found when exactly one was required")
        return self._rows[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]


Statements = Sequence[tuple[sa.Executable, dict[str, Any] | None]]


def run(session: Session, statements: Statements) -> PreparedResult | None:
    """Run ``statements`` in order in the session's transaction, prepared, and return the last
    one's result; or None, having run nothing, where any of them needs SQLAlchemy's own path
    (then the caller runs them so). Inside ``session.run_sync``."""
    connection = session.connection()
    if watched(session, connection):
        return None
    dialect = connection.dialect
    driver = connection.connection.dbapi_connection
    if dialect.name == "sqlite" and not (
        isinstance(driver, sqlite_driver.OneTripConnection) and driver.runs_on_loop
    ):
        return None  # outside a write transaction a statement may wait for a lock: not on the loop
    steps: list[tuple[Prepared, tuple[Any, ...]]] = []
    for statement, params in statements:
        ready = prepare(dialect, statement, params)
        if ready is None:
            return None
        steps.append((ready, ready.bind(params or {})))
    if dialect.name == "sqlite":
        return _run_sqlite(driver, steps)  # type: ignore[arg-type]
    return _run_postgresql(connection, steps)


def _run_sqlite(
    driver: sqlite_driver.OneTripConnection, steps: list[tuple[Prepared, tuple[Any, ...]]]
) -> PreparedResult:
    try:
        fetched, description, rowcount = driver.run_on_loop(
            [(statement.sql, parameters) for statement, parameters in steps]
        )
    except sqlite_driver.StatementFailed as failed:
        statement, parameters = steps[failed.index]
        raise sa.exc.DBAPIError.instance(
            statement.sql, parameters, failed.error, sqlite3.Error
        ) from failed.error
    return PreparedResult(steps[-1][0].rows(fetched, description), rowcount)


def _run_postgresql(connection: Connection, steps: list[tuple[Prepared, tuple[Any, ...]]]) -> PreparedResult:
    dialect = connection.dialect
    cursor: Any = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for statement, parameters in steps:
            try:
                await_(cursor._prepare_and_execute(statement.sql, parameters))
            except dialect.loaded_dbapi.Error as error:
                disconnected = dialect.is_disconnect(error, connection.connection.dbapi_connection, cursor)
                if disconnected:
                    connection.invalidate(error)
                raise sa.exc.DBAPIError.instance(
                    statement.sql,
                    parameters,
                    error,
                    dialect.loaded_dbapi.Error,
                    connection_invalidated=disconnected,
                    dialect=dialect,
                ) from error
        rows = steps[-1][0].rows(list(cursor._rows), cursor.description)
        return PreparedResult(rows, cursor.rowcount)
    finally:
        cursor.close()


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


_PREPARED: dict[tuple[str, sa.Executable, tuple[str, ...]], Prepared | None] = {}


def prepare(dialect: sa.Dialect, statement: sa.Executable, params: dict[str, Any] | None) -> Prepared | None:
    """``statement`` compiled for this dialect and these parameter names, or None where only
    SQLAlchemy's own execution will do (see the module's docstring). Made once per statement and
    names: statements are built once, at import (an INSERT's ``.values()`` are fixed in it)."""
    if not isinstance(statement, sa.Insert | sa.Select):
        return None
    params = params or {}
    key = (dialect.name, statement, tuple(params))
    try:
        return _PREPARED[key]
    except KeyError:
        pass
    if len(_PREPARED) >= 256:  # a few statements per service; never grow without bound
        _PREPARED.clear()
    _PREPARED[key] = prepared = _compile(dialect, statement, params)
    return prepared


def _compile(
    dialect: sa.Dialect, statement: sa.Insert | sa.Select[Any], params: dict[str, Any]
) -> Prepared | None:
    if isinstance(statement, sa.Insert):
        columns = [name for name in params if name in statement.table.c]
        compiled = statement.compile(dialect=dialect, column_keys=columns)
        if compiled.insert_prefetch or compiled.returning:
            return None  # Python-side defaults to compute, or rows to return
    else:
        compiled = statement.compile(dialect=dialect)
    if compiled.positiontup is None or compiled.literal_execute_params or compiled.post_compile_params:
        return None
    processors = compiled._bind_processors
    parameters: list[tuple[str | None, Processor, Any]] = []
    for name in compiled.positiontup:
        process = processors.get(name)
        if not (process is None or callable(process)):
            return None  # a processor per element (an array's): SQLAlchemy's path
        bind = compiled.binds[name]
        if name in params:
            parameters.append((name, process, None))
        elif bind.required or bind.callable is not None or bind.expanding:
            return None  # a value SQLAlchemy asks for, or computes, at execution
        else:
            parameters.append((None, None, process(bind.value) if process else bind.value))
    if isinstance(statement, sa.Insert):
        return Prepared(compiled.string, tuple(parameters))
    results = compiled._result_columns
    names = [result.keyname for result in results]
    plain = all(name.isidentifier() and not keyword.iskeyword(name) and name[0] != "_" for name in names)
    if not plain or len(set(names)) != len(names):
        return None  # a row of named tuples needs plain, distinct names
    return Prepared(
        compiled.string,
        tuple(parameters),
        collections.namedtuple("Row", names),
        tuple(result.type for result in results),
        dialect,
    )
