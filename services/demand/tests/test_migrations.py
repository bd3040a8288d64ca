"""Migrations: a database made by the earlier revision keeps its history when upgraded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import sqlalchemy as sa

from services.demand.tests.conftest import SERVICE_DIR
from shared.db import create_engine
from shared.migrations import upgrade
from shared.testing.databases import DatabaseFactory


async def at_revision_two(url: str) -> None:
    await asyncio.to_thread(upgrade, SERVICE_DIR, url, "dem0002")


async def test_history_rows_of_current_versions_move_onto_the_lines(
    db_backend: str, database_factory: DatabaseFactory
) -> None:
    url = await database_factory.create(db_backend, "demand-dem0002", at_revision_two)
    engine = create_engine(url, pooled=False)
    now = datetime(2026, 11, 1, tzinfo=UTC).replace(tzinfo=None)
    line = {
        "id": "line-1", "anchor_id": "anchor-1", "version": 2, "external_ref": None, "title": "T",
        "description": "", "cpv_codes": '["55520000"]', "main_cpv": "55520000", "estimated_value_pence": 1,
        "min_value_pence": None, "max_value_pence": None, "category": "services", "procurement_method": None,
        "expected_tender_date": None, "contract_start": None, "duration_months": None, "lots": "[]",
        "suitable_for_sme": False, "suitable_for_vcse": False, "reprocurement": False, "status": "planned",
        "status_reason": None, "visibility": "public", "requirements": "[]", "social_value_priorities": "[]",
        "delivery_area": None, "created_at": now, "updated_at": now,
    }  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO anchors (id, name, type, identifiers, version, created_at, updated_at) "
                "VALUES ('anchor-1', 'A', 'fire', '{}', 1, :now, :now)"
            ),
            {"now": now},
        )
        columns = ", ".join(line)
        values = ", ".join(f":{name}" for name in line)
        await conn.execute(sa.text(f"INSERT INTO demand_lines ({columns}) VALUES ({values})"), line)
        for version, change, actor in ((1, "created", "key-a"), (2, "updated", "key-b")):
            await conn.execute(
                sa.text(
                    "INSERT INTO demand_line_versions (line_id, version, data, changed_fields, change, "
                    "actor, actor_role, changed_at) "
                    "VALUES ('line-1', :v, '{}', :fields, :change, :actor, 'anchor', :now)"
                ),
                {
                    "v": version,
                    "fields": '["title"]' if version == 2 else "[]",
                    "change": change,
                    "actor": actor,
                    "now": now,
                },
            )
    await engine.dispose()

    await asyncio.to_thread(upgrade, SERVICE_DIR, url)

    engine = create_engine(url, pooled=False)
    async with engine.connect() as conn:
        moved = (
            await conn.execute(sa.text("SELECT change, changed_by, changed_by_role FROM demand_lines"))
        ).one()
        fields = await conn.scalar(sa.text("SELECT changed_fields FROM demand_lines"))
        kept = (await conn.execute(sa.text("SELECT version FROM demand_line_versions"))).scalars().all()
    await engine.dispose()
    assert tuple(moved) == ("updated", "key-b", "anchor")
    assert fields in (["title"], '["title"]')
    assert kept == [1]
