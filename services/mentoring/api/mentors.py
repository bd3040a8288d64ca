"""Routes of mentors: registration, profile, availability, calendar feed, recommendations."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.engine import Row

from services.mentoring import access, calendars, service
from services.mentoring.api.dependencies import (
    API,
    Caller,
    ContextDep,
    PageLimit,
    mentor_or_404,
    tags_of,
)
from services.mentoring.schemas import (
    AvailabilityIn,
    AvailabilityOut,
    CalendarTokenOut,
    MentorIn,
    MentorOut,
    MentorPage,
    MentorPatch,
    Recommendation,
    Recommendations,
)
from shared.db import SessionDep
from shared.http import DEFAULT_PAGE_SIZE, check_if_match, etag, json_response
from shared.idempotency import IdempotencyDep
from shared.principal import PrincipalDep
from shared.problems import field_errors, forbidden, not_found

router = APIRouter()


async def _own_mentor(mentor_id: uuid.UUID, principal: Caller, db: SessionDep) -> Row[Any]:
    """The mentor, locked, for staff or the mentor themselves to change."""
    access.allow(principal, "staff", "mentor")
    access.allow_mentor_owner(principal, mentor_id)
    return await mentor_or_404(db, mentor_id, lock=True)


async def _own_mentor_unchanged(
    mentor: Annotated[Row[Any], Depends(_own_mentor)], request: Request
) -> Row[Any]:
    """As :func:`_own_mentor`, and only while its version is the one the caller read (If-Match)."""
    check_if_match(request, etag(mentor.version))
    return mentor


OwnMentor = Annotated[Row[Any], Depends(_own_mentor)]
OwnMentorUnchanged = Annotated[Row[Any], Depends(_own_mentor_unchanged)]

# -- mentors ------------------------------------------------------------------------------------


def _mentor_location(mentor_id: uuid.UUID) -> str:
    return f"{API}/mentors/{mentor_id}"


@router.post(
    "/mentors", status_code=201, response_model=MentorOut, tags=["mentors"], summary="Register a mentor"
)
async def register_mentor(
    body: MentorIn, ctx: ContextDep, db: SessionDep, idempotency: IdempotencyDep
) -> Response:
    principal, now = ctx.principal, ctx.now
    access.allow(principal, "staff")

    async def create() -> Response:
        if body.availability is not None:
            errors = body.availability.problems("availability.")
            if body.availability.timezone not in (None, body.timezone):
                errors.append({"field": "availability.timezone", "message": "must be the mentor's timezone"})
            if errors:
                raise field_errors(errors)
        mentor = await service.register_mentor(db, body, now)
        return json_response(
            MentorOut.model_validate(mentor),
            status_code=201,
            headers={"Location": _mentor_location(mentor.id), "ETag": etag(mentor.version)},
        )

    return await idempotency.respond(db, create)


@router.get("/mentors", response_model=MentorPage, tags=["mentors"], summary="List mentors")
async def list_mentors(
    principal: Caller,
    db: SessionDep,
    expertise: Annotated[list[str], Query(description="Any of these tags")] = [],  # noqa: B006
    organisation: str | None = None,
    active: bool | None = None,
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> MentorPage:
    access.allow(principal, *access.MENTOR_READERS)
    rows, next_cursor = await service.list_mentors(
        db,
        expertise=tags_of(expertise),
        organisation=organisation,
        active=active,
        limit=limit,
        cursor=cursor,
    )
    return MentorPage(items=[MentorOut.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get(
    "/mentors/recommendations",
    response_model=Recommendations,
    tags=["mentors"],
    summary="Mentors for an enterprise: expertise against its open milestones, then capacity",
)
async def recommend_mentors(
    ctx: ContextDep,
    db: SessionDep,
    enterprise_id: uuid.UUID,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Recommendations:
    principal, now, settings = ctx.principal, ctx.now, ctx.settings
    access.allow(principal, "staff", "enterprise", "mentor")
    if principal.role == "enterprise" and not principal.owns("enterprise", enterprise_id):
        raise not_found("Enterprise", enterprise_id)
    result = await service.recommend_mentors(db, enterprise_id, now=now, settings=settings, limit=limit)
    items = []
    for ranked in result.ranked:
        mentor = result.mentors[ranked.candidate.mentor_id]
        items.append(
            Recommendation(
                mentor_id=mentor.id,
                name=mentor.name,
                organisation=mentor.organisation,
                expertise=list(mentor.expertise),
                timezone=mentor.timezone,
                score=ranked.score,
                covered_milestones=list(ranked.covered),
                coverage=ranked.coverage,
                already_mentoring=ranked.candidate.already_mentoring,
                active_mentees=ranked.candidate.active_mentees,
                max_active_mentees=mentor.max_active_mentees,
                sessions_left_this_week=ranked.sessions_left_this_week,
            )
        )
    return Recommendations(
        enterprise_id=enterprise_id,
        enterprise_known=result.enterprise_known,
        open_milestones=result.open_milestones,
        items=items,
    )


@router.get("/mentors/{mentor_id}", response_model=MentorOut, tags=["mentors"], summary="A mentor")
async def get_mentor(
    mentor_id: uuid.UUID, principal: Caller, db: SessionDep, response: Response
) -> MentorOut:
    access.allow(principal, *access.MENTOR_READERS)
    mentor = await mentor_or_404(db, mentor_id)
    response.headers["ETag"] = etag(mentor.version)
    return MentorOut.model_validate(mentor)


@router.patch("/mentors/{mentor_id}", response_model=MentorOut, tags=["mentors"], summary="Change a mentor")
async def update_mentor(
    body: MentorPatch, mentor: OwnMentorUnchanged, ctx: ContextDep, db: SessionDep, response: Response
) -> MentorOut:
    updated = await service.update_mentor(db, mentor, body, ctx.now)
    response.headers["ETag"] = etag(updated.version)
    return MentorOut.model_validate(updated)


@router.get(
    "/mentors/{mentor_id}/availability",
    response_model=AvailabilityOut,
    tags=["mentors"],
    summary="A mentor's availability rules",
)
async def get_availability(
    mentor_id: uuid.UUID, principal: Caller, db: SessionDep, response: Response
) -> AvailabilityOut:
    access.allow(principal, *access.MENTOR_READERS)
    mentor = await mentor_or_404(db, mentor_id)
    response.headers["ETag"] = etag(mentor.version)
    return AvailabilityOut.model_validate(mentor)


@router.put(
    "/mentors/{mentor_id}/availability",
    response_model=AvailabilityOut,
    tags=["mentors"],
    summary="Replace a mentor's availability rules (weekly windows, date overrides, buffers, notice, limits)",
)
async def set_availability(
    body: AvailabilityIn, mentor: OwnMentorUnchanged, ctx: ContextDep, db: SessionDep, response: Response
) -> AvailabilityOut:
    if errors := body.problems():
        raise field_errors(errors)
    updated = await service.set_availability(db, mentor, body, ctx.now)
    response.headers["ETag"] = etag(updated.version)
    return AvailabilityOut.model_validate(updated)


@router.post(
    "/mentors/{mentor_id}/calendar-token",
    response_model=CalendarTokenOut,
    tags=["calendars"],
    summary="Rotate the secret calendar feed URL (the previous one stops working at once)",
)
async def rotate_calendar_token(
    mentor: OwnMentor, ctx: ContextDep, db: SessionDep, response: Response
) -> CalendarTokenOut:
    now = ctx.now
    token = await service.rotate_calendar_token(db, mentor, now)
    response.headers["Cache-Control"] = "no-store"
    return CalendarTokenOut(
        mentor_id=mentor.id,
        token=token,
        feed_path=f"{API}/mentors/{mentor.id}/calendar.ics?token={quote(token)}",
        rotated_at=now,
    )


@router.delete(
    "/mentors/{mentor_id}/calendar-token",
    status_code=204,
    tags=["calendars"],
    summary="Turn the calendar feed URL off",
)
async def revoke_calendar_token(mentor: OwnMentor, ctx: ContextDep, db: SessionDep) -> Response:
    await service.revoke_calendar_token(db, mentor, ctx.now)
    return Response(status_code=204)


@router.get(
    "/mentors/{mentor_id}/calendar.ics",
    tags=["calendars"],
    summary="A mentor's calendar feed (staff, the mentor, or anyone holding the secret feed URL)",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {}}}},
)
async def mentor_calendar(
    mentor_id: uuid.UUID,
    principal: PrincipalDep,
    db: SessionDep,
    request: Request,
    token: str | None = None,
) -> Response:
    if principal.role == "public":
        mentor = await service.load_mentor(db, mentor_id)
        if not service.feed_token_valid(mentor, token):
            # Same answer for an unknown mentor and a wrong or revoked token.
            raise forbidden("This calendar feed URL is not valid (it may have been rotated).")
        assert mentor is not None
    else:
        access.allow(principal, "staff", "mentor")
        access.allow_mentor_owner(principal, mentor_id)
        mentor = await mentor_or_404(db, mentor_id)
    state = request.app.state
    body = await service.mentor_feed(db, mentor, now=state.clock(), settings=state.mentoring_settings)
    return Response(
        body,
        media_type=calendars.CONTENT_TYPE,
        headers={
            "Cache-Control": "private, max-age=300",
            "Content-Disposition": 'inline; filename="mentoring.ics"',
        },
    )
