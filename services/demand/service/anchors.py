"""Anchors: register, change (moving their lines' pipeline cells with a new type), list."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import events, repository
from services.demand.pipeline import storage
from services.demand.pipeline.cells import CellDeltas
from services.demand.schemas import AnchorCreate, AnchorPatch
from shared import outbox
from shared.db import utcnow
from shared.problems import Problem, field_errors, not_found


def precondition_failed() -> Problem:
    return Problem(
        412,
        "Precondition Failed",
        "The resource changed since you read it; fetch it again and retry with its new ETag.",
        type="precondition-failed",
    )


async def get_anchor(session: AsyncSession, anchor_id: str) -> sa.Row[Any]:
    anchor = await repository.get_anchor(session, anchor_id)
    if anchor is None:
        raise not_found("Anchor", anchor_id)
    return anchor


async def require_anchor(session: AsyncSession, anchor_id: str) -> sa.Row[Any]:
    """The anchor a write names; 422 on ``anchor_id`` when there is none."""
    anchor = await repository.get_anchor(session, anchor_id)
    if anchor is None:
        raise field_errors([{"field": "anchor_id", "message": f"no anchor with id {anchor_id}"}])
    return anchor


async def create_anchor(session: AsyncSession, body: AnchorCreate) -> sa.Row[Any]:
    now = utcnow()
    anchor = await repository.insert_anchor(
        session,
        {
            "id": str(uuid.uuid4()),
            "name": body.name,
            "type": body.type,
            "identifiers": body.identifiers,
            "annual_third_party_spend_pence": body.annual_third_party_spend_pence,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        },
    )
    await outbox.add(session, events.anchor_event(events.ANCHOR_REGISTERED, anchor))
    return anchor


async def update_anchor(session: AsyncSession, anchor: sa.Row[Any], body: AnchorPatch) -> sa.Row[Any]:
    changes = body.model_dump(exclude_unset=True)
    for required in ("name", "type", "identifiers"):
        if required in changes and changes[required] is None:
            raise field_errors([{"field": required, "message": "cannot be cleared"}])
    changed = {k: v for k, v in changes.items() if getattr(anchor, k) != v}
    if not changed:
        return anchor
    new = await repository.update_anchor(
        session, anchor.id, anchor.version, {**changed, "version": anchor.version + 1, "updated_at": utcnow()}
    )
    if new is None:
        raise precondition_failed()
    if "type" in changed:
        # Its lines move to the cells of the new anchor type.
        deltas = CellDeltas()
        for line in await repository.open_lines_of_anchor(session, anchor.id):
            deltas.move(line, anchor.type, line, new.type)
        await storage.apply_cell_deltas(session, deltas)
    await outbox.add(session, events.anchor_event(events.ANCHOR_UPDATED, new))
    return new


async def list_anchors(
    session: AsyncSession, *, cursor: str | None, limit: int, anchor_type: str | None, q: str | None
) -> tuple[list[sa.Row[Any]], str | None]:
    return await repository.anchor_page(session, cursor=cursor, limit=limit, anchor_type=anchor_type, q=q)
