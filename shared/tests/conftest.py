"""Fixtures of the kit's own tests: a database holding only the kit tables."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from shared.db import KIT_METADATA, Database, create_engine, new_metadata
from shared.migrations import include_kit_tables
from shared.testing.databases import DatabaseFactory

# A table the tests write business rows to, beside the kit tables.
test_metadata = new_metadata()
include_kit_tables(test_metadata)
things = sa.Table(
    "things",
    test_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
)
received = sa.Table(
    "received",
    test_metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(255), nullable=False),
)
assert KIT_METADATA.tables.keys() <= test_metadata.tables.keys()


async def _create_tables(url: str) -> None:
    engine = create_engine(url, pooled=False)
    async with engine.begin() as conn:
        await conn.run_sync(test_metadata.create_all)
    await engine.dispose()


@pytest.fixture
async def database(db_backend: str, database_factory: DatabaseFactory) -> AsyncIterator[Database]:
    url = await database_factory.create(db_backend, "kit", _create_tables)
    db = Database(url, pool_size=5)
    yield db
    await db.dispose()
