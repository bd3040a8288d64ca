"""The demand service's copies of other services' data: enterprises and their readiness, and
the milestone catalogue.

Kept by :mod:`services.demand.consumers` from the enterprises service's state-carrying
events; an event not newer (by ``version``) than the copy we hold is dropped, so
redelivery and reordering are harmless. Matching reads the enterprises; the checks of a
line's requirement codes read the catalogue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import cpv
from services.demand.models import match_enterprises, match_readiness, milestone_catalogue
from services.demand.vocabulary import INCUBATED_STAGES
from shared.db import store_if_newer, utcnow


async def store_enterprise(session: AsyncSession, snapshot: dict[str, Any]) -> bool:
    """Keep an enterprise snapshot unless ours is as new or newer; True when stored."""
    values = {
        "enterprise_id": snapshot["enterprise_id"],
        "version": snapshot["version"],
        "name": snapshot["name"],
        "legal_form": snapshot.get("legal_form"),
        "stage": snapshot["stage"],
        "cohort_id": snapshot.get("cohort_id"),
        "postcode": snapshot.get("postcode"),
        "cpv_codes": [c for c in snapshot.get("cpv_codes") or [] if cpv.cpv_error(c) is None],
        "max_contract_value_pence": snapshot.get("max_contract_value_pence"),
        "employees": snapshot.get("employees"),
        "turnover_pence": snapshot.get("turnover_pence"),
        "vcse": bool(snapshot.get("vcse")),
        "size_class": snapshot.get("size_class"),
        "updated_at": utcnow(),
    }
    return await store_if_newer(session, match_enterprises, values)


async def store_readiness(session: AsyncSession, readiness: dict[str, Any]) -> bool:
    """Keep an enterprise's readiness unless ours is as new or newer; True when stored."""
    values = {
        "enterprise_id": readiness["enterprise_id"],
        "version": readiness["version"],
        "score": readiness["score"],
        "ready": readiness["ready"],
        "missing": list(readiness["missing"]),
        "verified": list(readiness["verified"]),
        "updated_at": utcnow(),
    }
    return await store_if_newer(session, match_readiness, values)


async def enterprise(session: AsyncSession, enterprise_id: str) -> dict[str, Any] | None:
    row = (
        await session.execute(
            sa.select(match_enterprises).where(match_enterprises.c.enterprise_id == enterprise_id)
        )
    ).first()
    return dict(row._mapping) if row is not None else None


async def verified_milestones(
    session: AsyncSession, enterprise_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The verified milestones of each enterprise (those we hold a readiness copy of)."""
    if not enterprise_ids:
        return {}
    t = match_readiness.c
    out: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(enterprise_ids), 500):
        rows = await session.execute(
            sa.select(t.enterprise_id, t.verified).where(
                t.enterprise_id.in_(enterprise_ids[start : start + 500])
            )
        )
        for row in rows:
            out[row.enterprise_id] = list(row.verified or [])
    return out


async def incubated_enterprises(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        sa.select(match_enterprises).where(match_enterprises.c.stage.in_(INCUBATED_STAGES))
    )
    return [dict(row._mapping) for row in rows]


async def store_milestone_definition(session: AsyncSession, definition: dict[str, Any]) -> bool:
    """Keep a catalogue entry unless ours is as new or newer; True when stored."""
    values = {
        "code": definition["code"],
        "version": definition["version"],
        "name": definition["name"],
        "category": definition["category"],
        "updated_at": utcnow(),
    }
    return await store_if_newer(session, milestone_catalogue, values)


async def milestone_codes(session: AsyncSession) -> frozenset[str]:
    """Every code of our copy of the milestone catalogue (empty until its first event arrived)."""
    return frozenset((await session.scalars(sa.select(milestone_catalogue.c.code))).all())
