"""Awards: an anchor records who won its line and for how much, and may correct it.

Setting an award makes the line ``awarded`` through :func:`lines.update_line`, so the line gets a
new version (its history, the pipeline and the line events follow as for any status change);
a public line's award is also told as ``demand.item.awarded.v1``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import events, repository
from services.demand.schemas import AwardIn
from services.demand.service import lines
from services.demand.service.anchors import precondition_failed
from services.demand.vocabulary import AWARDABLE_STATUSES, TRANSITIONS
from shared import outbox
from shared.db import utcnow
from shared.principal import Principal
from shared.problems import conflict, field_errors, not_found

AWARD_FIELDS = tuple(AwardIn.model_fields)
# The status changes an award may make: any awardable line becomes awarded.
AWARD_TRANSITIONS = {
    status: allowed | {"awarded"} if status in AWARDABLE_STATUSES else allowed
    for status, allowed in TRANSITIONS.items()
}


async def award_of(session: AsyncSession, line: dict[str, Any]) -> dict[str, Any] | None:
    """The award of a line the caller may see, None if it has none."""
    return await repository.get_award(session, line["id"])


async def require_award(session: AsyncSession, line: dict[str, Any]) -> dict[str, Any]:
    award = await award_of(session, line)
    if award is None:
        raise not_found("Award", line["id"])
    return award


def _award_errors(body: AwardIn) -> list[dict[str, str]]:
    today = utcnow().date()
    if body.awarded_on > today:
        return [
            {
                "field": "awarded_on",
                "message": f"{body.awarded_on.isoformat()} is in the future (today is {today.isoformat()}); "
                "record an award once it is made",
            }
        ]
    return []


async def set_award(
    session: AsyncSession,
    principal: Principal,
    line: dict[str, Any],
    current: dict[str, Any] | None,
    body: AwardIn,
) -> tuple[dict[str, Any], bool]:
    """Set or correct the award of a line its caller may change (locked for update; ``current`` its
    award as read with it); returns the award and whether this call created it. An unchanged award
    changes and publishes nothing."""
    if errors := _award_errors(body):
        raise field_errors(errors)
    if line["status"] not in AWARDABLE_STATUSES:
        raise conflict(
            f"A {line['status']} line cannot be awarded.",
            errors=[
                {
                    "field": "status",
                    "message": f"is {line['status']}; only a planned, tendering or awarded line "
                    "takes an award",
                }
            ],
        )
    values = body.values()
    if (
        current is not None
        and line["status"] == "awarded"
        and all(current[name] == values[name] for name in AWARD_FIELDS)
    ):
        return current, False
    line = await lines.update_line(
        session,
        principal,
        line,
        {"status": "awarded"},
        transitions=AWARD_TRANSITIONS,
        also_changed=["award"],
    )
    now = utcnow()
    if current is None:
        award = {
            "demand_id": line["id"],
            **values,
            "version": 1,
            "recorded_at": now,
            "recorded_by": principal.actor,
            "updated_at": now,
        }
        await repository.insert_award(session, award)
    else:
        changes = {**values, "version": current["version"] + 1, "updated_at": now}
        if not await repository.update_award(session, line["id"], current["version"], changes):
            raise precondition_failed()
        award = {**current, **changes}
    if line["visibility"] == "public":
        await outbox.add(session, events.award_event(line, award))
    return award, current is None
