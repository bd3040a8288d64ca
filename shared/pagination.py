"""Keyset pagination, one helper for every list.

A cursor is the sort key of the last item returned, as opaque base64 JSON. A cursor coming back
is validated strictly against the key's types (the columns' Python types): anything this API did
not issue answers 400 naming ``cursor``, before any query runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from shared.problems import Problem

MAX_CURSOR_LENGTH = 1024
INT_RANGE = range(-(2**63), 2**63)
INT32_RANGE = range(-(2**31), 2**31)
Key = tuple[Any, ...]
T = TypeVar("T")


def bad_cursor() -> Problem:
    return Problem(
        400,
        "Bad Request",
        "The cursor is not valid; use the next_cursor of a previous page.",
        type="invalid-cursor",
        errors=[{"field": "cursor", "message": "not a cursor issued by this API"}],
    )


def _checked(kind: type | range, value: Any) -> Any:
    """``value`` read back as ``kind``; ValueError when it is anything else."""
    if kind is datetime and isinstance(value, str):
        instant = datetime.fromisoformat(value)
        if instant.tzinfo is None:
            raise ValueError("naive time")
        return instant.astimezone(UTC)  # OverflowError at the edges of the calendar
    if kind is uuid.UUID and isinstance(value, str):
        return uuid.UUID(value)
    if isinstance(kind, range) and type(value) is int and value in kind:
        return value
    if kind is str and isinstance(value, str) and "\x00" not in value:
        return value
    raise ValueError(f"not a {kind}")


class CursorFormat:
    """The types of the values a cursor holds, in sort order."""

    def __init__(self, *kinds: type | range) -> None:
        """``kinds``: datetime, UUID, str, or int (a range: the integers the column holds)."""
        kinds = tuple(INT_RANGE if k is int else k for k in kinds)
        unsupported = [k for k in kinds if not isinstance(k, range) and k not in (datetime, uuid.UUID, str)]
        if unsupported:
            raise TypeError(f"no cursor format for {unsupported}")
        self.kinds = kinds

    def encode(self, values: Sequence[Any]) -> str:
        plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
        raw = json.dumps(plain, separators=(",", ":"), default=str).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, cursor: str | None) -> Key | None:
        """The key in ``cursor`` (None without one); 400 naming ``cursor`` unless we issued it."""
        if cursor is None:
            return None
        try:
            if len(cursor) > MAX_CURSOR_LENGTH:
                raise ValueError("too long")
            values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            if not isinstance(values, list) or len(values) != len(self.kinds):
                raise ValueError("wrong shape")
            return tuple(_checked(kind, value) for kind, value in zip(self.kinds, values, strict=True))
        except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error) as exc:
            raise bad_cursor() from exc


def _kind(column_type: sa.types.TypeEngine[Any]) -> type | range:
    """What a column's values are; integers bounded by the column's size (PostgreSQL's INTEGER
    is 32 bits)."""
    if isinstance(column_type, sa.Integer) and not isinstance(column_type, sa.BigInteger):
        return INT32_RANGE
    return column_type.python_type


def _value(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


class Keyset:
    """The sort order of a list: its key columns, ascending (or all ``descending``); the last
    column must be unique."""

    def __init__(self, *columns: sa.ColumnElement[Any], descending: bool = False) -> None:
        self.columns = columns
        self.names = tuple(str(c.key) for c in columns)
        self.format = CursorFormat(*(_kind(c.type) for c in columns))
        self.descending = descending

    def decode(self, cursor: str | None) -> Key | None:
        return self.format.decode(cursor)

    def cursor_after(self, row: Any) -> str:
        """The cursor of the page that follows ``row`` (a Row, a mapping or an object)."""
        return self.format.encode([_value(row, name) for name in self.names])

    def rows_after(self, key: Key) -> sa.ColumnElement[bool]:
        position = sa.tuple_(*self.columns)
        return position < key if self.descending else position > key

    def select(self, query: sa.Select[Any], after: Key | None, limit: int) -> sa.Select[Any]:
        """``query`` in key order, after ``after``, at most ``limit`` rows."""
        if after is not None:
            query = query.where(self.rows_after(after))
        order = [c.desc() for c in self.columns] if self.descending else list(self.columns)
        return query.order_by(*order).limit(limit)

    def cut(self, rows: Sequence[T], limit: int) -> tuple[list[T], str | None]:
        """The first ``limit`` of up to ``limit + 1`` rows, and the next cursor when more follow."""
        page = list(rows[:limit])
        return page, self.cursor_after(page[-1]) if len(rows) > limit and page else None

    async def page(
        self, session: AsyncSession, query: sa.Select[Any], cursor: str | None, limit: int
    ) -> tuple[list[sa.Row[Any]], str | None]:
        """One page of ``query`` after ``cursor``, and the cursor of the next page (None at the end)."""
        rows = (await session.execute(self.select(query, self.decode(cursor), limit + 1))).all()
        return self.cut(rows, limit)
