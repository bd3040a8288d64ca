"""The history of an enterprise and its milestones: who changed what, when."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import repository
from services.enterprises.actors import Actor
from services.enterprises.schemas import HistoryEntry, Party
from shared.db import utcnow
from shared.problems import not_found


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``{"field": {"from": old, "to": new}}`` of the fields in ``after`` that changed."""
    return {
        name: {"from": before.get(name), "to": value}
        for name, value in after.items()
        if before.get(name) != value
    }


async def record(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    actor: Actor,
    action: str,
    changes: dict[str, Any],
    *,
    code: str | None = None,
    note: str | None = None,
    at: datetime | None = None,
) -> None:
    await repository.add_history(
        session,
        enterprise_id=enterprise_id,
        at=at or utcnow(),
        actor_role=actor.role,
        actor=actor.actor,
        actor_subject=actor.subject_id,
        milestone_code=code,
        action=action,
        changes=jsonable(changes),
        note=note,
    )


async def list_history(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    *,
    milestone_code: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[HistoryEntry], str | None]:
    if not await repository.enterprise_exists(session, enterprise_id):
        raise not_found("Enterprise", enterprise_id)
    rows, next_cursor = await repository.history_page(session, enterprise_id, milestone_code, limit, cursor)
    items = [
        HistoryEntry(
            id=r.id,
            at=r.at,
            actor=Party(role=r.actor_role, actor=r.actor, subject_id=r.actor_subject),
            milestone_code=r.milestone_code,
            action=r.action,
            changes=r.changes,
            note=r.note,
        )
        for r in rows
    ]
    return items, next_cursor
