"""Routes of free slots: one mentor's, and a search over many."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from services.mentoring import access, service
from services.mentoring.api.dependencies import (
    ContextDep,
    PageLimit,
    mentor_or_404,
    required_time,
    tags_of,
)
from services.mentoring.schemas import (
    MentorSlotOut,
    MentorSlots,
    SlotOut,
    SlotPage,
)
from shared.db import SessionDep

router = APIRouter()

# -- slots --------------------------------------------------------------------------------------


@router.get(
    "/mentors/{mentor_id}/slots",
    response_model=MentorSlots,
    tags=["slots"],
    summary="A mentor's free start times in a range, for a session length",
)
async def mentor_slots(
    mentor_id: uuid.UUID,
    ctx: ContextDep,
    db: SessionDep,
    start: Annotated[str, Query(description="RFC 3339 with offset, or a date (local midnight)")],
    end: Annotated[str, Query(description="RFC 3339 with offset, or a date (local midnight), exclusive")],
    duration_minutes: Annotated[int, Query(ge=5, le=480)],
) -> MentorSlots:
    principal, now, settings = ctx.principal, ctx.now, ctx.settings
    access.allow(principal, *access.MENTOR_READERS)
    range_start, range_end = required_time(start, "start"), required_time(end, "end")
    mentor = await mentor_or_404(db, mentor_id)
    found = await service.mentor_slots(
        db,
        mentor,
        start=range_start,
        end=range_end,
        duration_minutes=duration_minutes,
        now=now,
        max_days=settings.max_slot_range_days,
    )
    length = timedelta(minutes=duration_minutes)
    return MentorSlots(
        mentor_id=mentor.id,
        timezone=mentor.timezone,
        duration_minutes=duration_minutes,
        items=[
            SlotOut(start=instant, end=(instant + length).astimezone(instant.tzinfo)) for instant in found
        ],
    )


@router.get(
    "/slots",
    response_model=SlotPage,
    tags=["slots"],
    summary="Free slots of several mentors at once (any mentor with an expertise), soonest first",
)
async def slots_of_mentors(
    ctx: ContextDep,
    db: SessionDep,
    start: Annotated[
        str, Query(description="RFC 3339 with offset, or a date (each mentor's local midnight)")
    ],
    end: Annotated[str, Query(description="RFC 3339 with offset, or a date, exclusive")],
    duration_minutes: Annotated[int, Query(ge=5, le=480)],
    expertise: Annotated[list[str], Query(description="Mentors with any of these tags")] = [],  # noqa: B006
    mentor_id: Annotated[list[uuid.UUID], Query(description="Only these mentors")] = [],  # noqa: B006
    limit: PageLimit = 200,
    cursor: str | None = None,
) -> SlotPage:
    principal, now, settings = ctx.principal, ctx.now, ctx.settings
    access.allow(principal, *access.MENTOR_READERS)
    items, next_cursor = await service.slots_of_mentors(
        db,
        expertise=tags_of(expertise),
        mentor_ids=mentor_id,
        start=required_time(start, "start"),
        end=required_time(end, "end"),
        duration_minutes=duration_minutes,
        now=now,
        max_days=settings.max_multi_slot_range_days,
        limit=limit,
        cursor=cursor,
    )
    length = timedelta(minutes=duration_minutes)
    return SlotPage(
        items=[
            MentorSlotOut(
                mentor_id=item.mentor_id,
                timezone=item.timezone,
                start=item.start,
                end=(item.start + length).astimezone(item.start.tzinfo),
            )
            for item in items
        ],
        next_cursor=next_cursor,
    )
