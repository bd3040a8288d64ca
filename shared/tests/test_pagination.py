"""Keyset pagination and versioned upserts, on real databases."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.db import Database, UtcDateTime, new_metadata, store_if_newer
from shared.pagination import CursorFormat, Keyset
from shared.problems import Problem

things = sa.Table(
    "things",
    new_metadata(),
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)
ORDER = Keyset(things.c.created_at, things.c.id)
NEWEST_FIRST = Keyset(things.c.created_at, things.c.id, descending=True)
T0 = datetime(2027, 1, 1, tzinfo=UTC)


def b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.fixture
async def database(db_backend, database_factory):
    async def prepare(url: str) -> None:
        db = Database(url)
        async with db.engine.begin() as conn:
            await conn.run_sync(things.metadata.create_all)
        await db.dispose()

    db = Database(await database_factory.create(db_backend, "pages", prepare))
    yield db
    await db.dispose()


def test_a_cursor_round_trips_to_typed_values() -> None:
    ident = uuid.uuid4()
    cursor = ORDER.cursor_after({"created_at": T0, "id": ident})
    assert ORDER.decode(cursor) == (T0, ident)
    assert ORDER.decode(None) is None


CRAFTED = [
    "!!!",
    "e30",
    b64([None, None]),
    b64(["abc"]),
    b64(["2027-01-01", {}]),
    b64(["2027-01-01T00:00:00", "d2d0ed40-d0c6-450b-b72c-3b71f70997a1"]),  # naive
    b64(["9999-12-31T23:59:59-14:00", "d2d0ed40-d0c6-450b-b72c-3b71f70997a1"]),  # beyond year 9999 in UTC
    b64(["2027-01-01T00:00:00+00:00", "not-a-uuid"]),
    b64(["2027-01-01T00:00:00+00:00", "d2d0ed40-d0c6-450b-b72c-3b71f70997a1", 3]),
    b64([[[[[]]]]]),
    "W" * 100_000,
    b64("[" * 5000),
]


@pytest.mark.parametrize("cursor", CRAFTED)
def test_a_crafted_cursor_is_a_400_naming_cursor(cursor: str) -> None:
    with pytest.raises(Problem) as raised:
        ORDER.decode(cursor)
    assert raised.value.status == 400
    assert raised.value.errors == [{"field": "cursor", "message": "not a cursor issued by this API"}]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(b64, st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists)),
        st.builds(lambda a, b: b64([a, b]), st.text(), st.text()),
    )
)
def test_any_cursor_decodes_or_is_a_400(cursor: str) -> None:
    for form in (ORDER.format, CursorFormat(int), CursorFormat(str, uuid.UUID)):
        try:
            form.decode(cursor)
        except Problem as problem:
            assert problem.status == 400 and problem.errors[0]["field"] == "cursor"


async def test_pages_walk_every_row_once_in_key_order_both_ways(database: Database) -> None:
    rows = [
        {"id": uuid.uuid4(), "created_at": T0 + timedelta(seconds=i // 3), "name": f"n{i}", "version": 1}
        for i in range(11)
    ]  # three rows share each time: the id breaks the ties
    async with database.transaction() as session:
        await session.execute(sa.insert(things), rows)
    for order, expected in (
        (ORDER, sorted(rows, key=lambda r: (r["created_at"], r["id"]))),
        (NEWEST_FIRST, sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)),
    ):
        seen, cursor = [], None
        while True:
            async with database.transaction(write=False) as session:
                page, cursor = await order.page(session, sa.select(things), cursor, 4)
            seen += [row.id for row in page]
            if cursor is None:
                break
        assert seen == [r["id"] for r in expected]


async def test_a_version_is_stored_only_when_newer(database: Database) -> None:
    ident = uuid.uuid4()

    async def store(version: int, name: str) -> bool:
        values = {"id": ident, "created_at": T0, "name": name, "version": version}
        async with database.transaction() as session:
            return await store_if_newer(session, things, values, update=["name", "version"])

    assert await store(2, "second")
    assert not await store(1, "first")  # older: arrived late
    assert not await store(2, "again")  # the same version: a redelivery
    assert await store(3, "third")
    async with database.transaction(write=False) as session:
        row = (await session.execute(sa.select(things))).one()
    assert (row.name, row.version) == ("third", 3)


def test_an_integer_key_is_bounded_by_its_column() -> None:
    small = Keyset(sa.Column("position", sa.Integer))
    big = Keyset(sa.Column("id", sa.BigInteger))
    assert small.decode(b64([2**31 - 1])) == (2**31 - 1,)
    assert big.decode(b64([2**40])) == (2**40,)
    for cursor in (b64([2**31]), b64([True]), b64([1.5]), b64(["1"])):
        with pytest.raises(Problem):
            small.decode(cursor)
