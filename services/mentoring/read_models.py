"""The mentoring service's copy of the enterprises it mentors, kept from the enterprises service's
events: the fields of those events it reads (a tolerant copy of the producer's payloads), and
how each event is applied."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring.models import enterprises
from shared.db import store_if_newer

ENTERPRISE_SNAPSHOTS = frozenset(
    {
        "enterprises.enterprise.registered.v1",
        "enterprises.enterprise.updated.v1",
        "enterprises.enterprise.stage_changed.v1",
    }
)
READINESS_CHANGED = "enterprises.readiness.changed.v1"


class EnterpriseSnapshot(BaseModel):
    """The fields of the enterprise snapshot events this service reads."""

    model_config = ConfigDict(extra="ignore")

    enterprise_id: uuid.UUID
    version: int
    name: str | None = None
    stage: str | None = None


class ReadinessChanged(BaseModel):
    """The fields of ``enterprises.readiness.changed.v1`` this service reads."""

    model_config = ConfigDict(extra="ignore")

    enterprise_id: uuid.UUID
    version: int
    missing: list[str]
    ready: bool | None = None
    score: float | None = None


async def record_enterprise(session: AsyncSession, snapshot: EnterpriseSnapshot) -> None:
    """Apply an enterprise snapshot unless a newer (or the same) version is already applied."""
    values = {
        "id": snapshot.enterprise_id,
        "name": snapshot.name,
        "stage": snapshot.stage,
        "profile_version": snapshot.version,
        "open_milestones": [],
        "readiness_version": 0,
        "updated_at": datetime.now(UTC),
    }
    update = ["name", "stage", "profile_version", "updated_at"]
    await store_if_newer(session, enterprises, values, version="profile_version", update=update)


async def record_readiness(session: AsyncSession, readiness: ReadinessChanged) -> None:
    """Apply an enterprise's open milestones unless a newer (or the same) version is applied."""
    values = {
        "id": readiness.enterprise_id,
        "profile_version": 0,
        "open_milestones": list(dict.fromkeys(readiness.missing)),
        "ready": readiness.ready,
        "readiness_score": readiness.score,
        "readiness_version": readiness.version,
        "updated_at": datetime.now(UTC),
    }
    update = ["open_milestones", "ready", "readiness_score", "readiness_version", "updated_at"]
    await store_if_newer(session, enterprises, values, version="readiness_version", update=update)


async def enterprise_names(session: AsyncSession, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = await session.execute(
        sa.select(enterprises.c.id, enterprises.c.name).where(enterprises.c.id.in_(wanted))
    )
    return {row.id: row.name for row in rows}
