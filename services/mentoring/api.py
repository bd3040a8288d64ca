"""HTTP routes of the mentoring service: validation and authorization only, no SQL.

Who may do what is in ``access.py``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.engine import Row

from services.mentoring import access, calendars, service
from services.mentoring.schemas import (
    AvailabilityIn,
    AvailabilityOut,
    CalendarTokenOut,
    CancelIn,
    Cancellation,
    CompleteIn,
    DateOverride,
    MentorIn,
    MentorOut,
    MentorPage,
    MentorPatch,
    MentorSlotOut,
    MentorSlots,
    NoShow,
    NoShowIn,
    Outcome,
    Recommendation,
    Recommendations,
    RescheduleIn,
    SessionIn,
    SessionOut,
    SessionPage,
    SlotOut,
    SlotPage,
    TimeWindow,
    WeeklyWindow,
    normalise_tag,
)
from services.mentoring.settings import MentoringSettings
from services.mentoring.vocabulary import SESSION_STATUSES
from shared.db import SessionDep
from shared.http import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, check_if_match, etag, json_response
from shared.idempotency import IdempotencyDep
from shared.principal import Principal, PrincipalDep
from shared.problems import Problem, field_errors, forbidden, not_found

router = APIRouter()

API = "/api/v1"


# -- dependencies -------------------------------------------------------------------------------
# All async: FastAPI runs a plain ``def`` dependency in the threadpool, a thread hop per request.


def _signed_in_principal(request: Request) -> Principal:
    principal: Principal = request.state.principal  # verified by the kit's PrincipalMiddleware
    # The gateway sends "public" only for a calendar feed; everything else needs a credential.
    if principal.role == "public":
        raise Problem(401, "Unauthorized", "This route needs a credential.", type="unauthorized")
    return principal


async def _signed_in(request: Request) -> Principal:
    return _signed_in_principal(request)


@dataclass(frozen=True, slots=True)
class Context:
    """Who asks (signed in), the service clock's time and the settings: one dependency for the
    three, as FastAPI resolves every dependency of a route on every request."""

    principal: Principal
    now: datetime
    settings: MentoringSettings


async def _context(request: Request) -> Context:
    state = request.app.state
    return Context(_signed_in_principal(request), state.clock(), state.mentoring_settings)


Caller = Annotated[Principal, Depends(_signed_in)]
ContextDep = Annotated[Context, Depends(_context)]
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


def _parse_time(value: str | None, field: str, *, allow_date: bool = True) -> datetime | date | None:
    """RFC 3339 with an offset, or (where allowed) a date meaning local midnight."""
    if value is None:
        return None
    text = value.strip()
    if allow_date and len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    # An unencoded "+" in a query string arrives as a space.
    if len(text) > 6 and text[-6] == " " and text[-3] == ":":
        text = text[:-6] + "+" + text[-5:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        expected = "an RFC 3339 time with an offset (2027-03-29T09:00:00+01:00 or ...Z)"
        raise field_errors(
            [{"field": field, "message": f"must be {expected}" + (" or a date" if allow_date else "")}]
        )
    return parsed


def _required_time(value: str, field: str) -> datetime | date:
    parsed = _parse_time(value, field)
    assert parsed is not None
    return parsed


# -- representations ----------------------------------------------------------------------------


def _availability_out(mentor: Row[Any]) -> AvailabilityOut:
    return AvailabilityOut(
        timezone=mentor.timezone,
        weekly=[WeeklyWindow.model_validate(w) for w in mentor.weekly_windows],
        overrides=[
            DateOverride(date=o["date"], windows=[TimeWindow.model_validate(w) for w in o["windows"]])
            for o in mentor.date_overrides
        ],
        buffer_before_minutes=mentor.buffer_before_minutes,
        buffer_after_minutes=mentor.buffer_after_minutes,
        minimum_notice_minutes=mentor.minimum_notice_minutes,
        cancellation_notice_minutes=mentor.cancellation_notice_minutes,
        slot_interval_minutes=mentor.slot_interval_minutes,
        booking_horizon_days=mentor.booking_horizon_days,
        max_sessions_per_day=mentor.max_sessions_per_day,
    )


def _mentor_out(mentor: Row[Any]) -> MentorOut:
    return MentorOut(
        id=mentor.id,
        version=mentor.version,
        name=mentor.name,
        email=mentor.email,
        organisation=mentor.organisation,
        anchor_id=mentor.anchor_id,
        bio=mentor.bio,
        expertise=list(mentor.expertise),
        timezone=mentor.timezone,
        session_lengths_minutes=list(mentor.session_lengths),
        max_active_mentees=mentor.max_active_mentees,
        max_sessions_per_week=mentor.max_sessions_per_week,
        active=mentor.active,
        availability=_availability_out(mentor),
        calendar_feed_enabled=mentor.calendar_token_hash is not None,
        created_at=mentor.created_at,
        updated_at=mentor.updated_at,
    )


def _session_out(row: Row[Any] | dict[str, Any]) -> SessionOut:
    get = row.get if isinstance(row, dict) else lambda key: getattr(row, key)
    zone = ZoneInfo(get("timezone"))
    status = get("status")
    return SessionOut(
        id=get("id"),
        mentor_id=get("mentor_id"),
        enterprise_id=get("enterprise_id"),
        start=get("starts_at").astimezone(zone),
        end=get("ends_at").astimezone(zone),
        timezone=get("timezone"),
        duration_minutes=get("duration_minutes"),
        topic=get("topic"),
        milestone_code=get("milestone_code"),
        status=status,
        sequence=get("sequence"),
        booked_by_role=get("booked_by_role"),
        reschedule_reason=get("reschedule_reason"),
        cancellation=Cancellation(
            reason=get("cancel_reason"),
            cancelled_at=get("cancelled_at"),
            cancelled_by_role=get("cancelled_by_role"),
        )
        if status == "cancelled"
        else None,
        outcome=Outcome(
            outcome=get("outcome"),
            notes=get("notes"),
            action_items=list(get("action_items") or []),
            signed_off_milestones=list(get("signed_off_milestones") or []),
            completed_at=get("closed_at"),
        )
        if status == "completed"
        else None,
        no_show=NoShow(absent_party=get("absent_party"), note=get("notes"), recorded_at=get("closed_at"))
        if status == "no_show"
        else None,
        created_at=get("created_at"),
        updated_at=get("updated_at"),
    )


def _mentor_location(mentor_id: uuid.UUID) -> str:
    return f"{API}/mentors/{mentor_id}"


# -- mentors ------------------------------------------------------------------------------------


async def _mentor(db: SessionDep, mentor_id: uuid.UUID, *, lock: bool = False) -> Row[Any]:
    mentor = await service.load_mentor(db, mentor_id, lock=lock)
    if mentor is None:
        raise not_found("Mentor", mentor_id)
    return mentor


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
            _mentor_out(mentor),
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
        expertise=_tags(expertise),
        organisation=organisation,
        active=active,
        limit=limit,
        cursor=cursor,
    )
    return MentorPage(items=[_mentor_out(row) for row in rows], next_cursor=next_cursor)


def _tags(values: list[str]) -> list[str]:
    tags = []
    for i, value in enumerate(v for raw in values for v in raw.split(",") if v.strip()):
        try:
            tags.append(normalise_tag(value))
        except ValueError as exc:
            raise field_errors([{"field": f"expertise.{i}", "message": str(exc)}]) from exc
    return tags


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
    mentor = await _mentor(db, mentor_id)
    response.headers["ETag"] = etag(mentor.version)
    return _mentor_out(mentor)


@router.patch("/mentors/{mentor_id}", response_model=MentorOut, tags=["mentors"], summary="Change a mentor")
async def update_mentor(
    mentor_id: uuid.UUID,
    body: MentorPatch,
    ctx: ContextDep,
    db: SessionDep,
    request: Request,
    response: Response,
) -> MentorOut:
    principal, now = ctx.principal, ctx.now
    access.allow(principal, "staff", "mentor")
    access.allow_mentor_owner(principal, mentor_id)
    mentor = await _mentor(db, mentor_id, lock=True)
    check_if_match(request, etag(mentor.version))
    updated = await service.update_mentor(db, mentor, body, now)
    response.headers["ETag"] = etag(updated.version)
    return _mentor_out(updated)


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
    mentor = await _mentor(db, mentor_id)
    response.headers["ETag"] = etag(mentor.version)
    return _availability_out(mentor)


@router.put(
    "/mentors/{mentor_id}/availability",
    response_model=AvailabilityOut,
    tags=["mentors"],
    summary="Replace a mentor's availability rules (weekly windows, date overrides, buffers, notice, limits)",
)
async def set_availability(
    mentor_id: uuid.UUID,
    body: AvailabilityIn,
    ctx: ContextDep,
    db: SessionDep,
    request: Request,
    response: Response,
) -> AvailabilityOut:
    principal, now = ctx.principal, ctx.now
    access.allow(principal, "staff", "mentor")
    access.allow_mentor_owner(principal, mentor_id)
    if errors := body.problems():
        raise field_errors(errors)
    mentor = await _mentor(db, mentor_id, lock=True)
    check_if_match(request, etag(mentor.version))
    updated = await service.set_availability(db, mentor, body, now)
    response.headers["ETag"] = etag(updated.version)
    return _availability_out(updated)


@router.post(
    "/mentors/{mentor_id}/calendar-token",
    response_model=CalendarTokenOut,
    tags=["calendars"],
    summary="Rotate the secret calendar feed URL (the previous one stops working at once)",
)
async def rotate_calendar_token(
    mentor_id: uuid.UUID, ctx: ContextDep, db: SessionDep, response: Response
) -> CalendarTokenOut:
    principal, now = ctx.principal, ctx.now
    access.allow(principal, "staff", "mentor")
    access.allow_mentor_owner(principal, mentor_id)
    mentor = await _mentor(db, mentor_id, lock=True)
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
async def revoke_calendar_token(mentor_id: uuid.UUID, ctx: ContextDep, db: SessionDep) -> Response:
    principal, now = ctx.principal, ctx.now
    access.allow(principal, "staff", "mentor")
    access.allow_mentor_owner(principal, mentor_id)
    mentor = await _mentor(db, mentor_id, lock=True)
    await service.revoke_calendar_token(db, mentor, now)
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
        mentor = await _mentor(db, mentor_id)
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
    range_start, range_end = _required_time(start, "start"), _required_time(end, "end")
    mentor = await _mentor(db, mentor_id)
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
        expertise=_tags(expertise),
        mentor_ids=mentor_id,
        start=_required_time(start, "start"),
        end=_required_time(end, "end"),
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


# -- sessions -----------------------------------------------------------------------------------


def _session_location(session_id: uuid.UUID) -> str:
    return f"{API}/sessions/{session_id}"


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionOut,
    tags=["sessions"],
    summary="Book a session into a free slot (409 when it is no longer free)",
)
async def book_session(
    body: SessionIn,
    ctx: ContextDep,
    db: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    principal, now, settings = ctx.principal, ctx.now, ctx.settings
    access.allow(principal, "staff", "enterprise", "mentor")
    if principal.role == "enterprise" and not principal.owns("enterprise", body.enterprise_id):
        raise forbidden("An enterprise books sessions for itself only.")
    if principal.role == "mentor" and not principal.owns("mentor", body.mentor_id):
        raise forbidden("A mentor books sessions with themselves only.")

    async def create() -> Response:
        row = await service.book_session(db, principal=principal, data=body, now=now, settings=settings)
        return json_response(
            _session_out(row),
            status_code=201,
            headers={"Location": _session_location(row["id"]), "ETag": etag(row["sequence"])},
        )

    return await idempotency.respond(db, create)


@router.get("/sessions", response_model=SessionPage, tags=["sessions"], summary="List sessions")
async def list_sessions(
    principal: Caller,
    db: SessionDep,
    mentor_id: uuid.UUID | None = None,
    enterprise_id: uuid.UUID | None = None,
    start_from: Annotated[
        str | None, Query(alias="from", description="Sessions starting at or after")
    ] = None,
    start_to: Annotated[str | None, Query(alias="to", description="Sessions starting before")] = None,
    status: Annotated[list[str], Query(description="booked, cancelled, completed, no_show")] = [],  # noqa: B006
    limit: PageLimit = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> SessionPage:
    access.allow(principal, "staff", "enterprise", "mentor")
    # Enterprises and mentors see their own sessions only, whatever they filter on.
    if principal.role == "enterprise":
        if enterprise_id is not None and not principal.owns("enterprise", enterprise_id):
            return SessionPage(items=[])
        enterprise_id = uuid.UUID(principal.subject_id) if principal.subject_id else uuid.UUID(int=0)
    if principal.role == "mentor":
        if mentor_id is not None and not principal.owns("mentor", mentor_id):
            return SessionPage(items=[])
        mentor_id = uuid.UUID(principal.subject_id) if principal.subject_id else uuid.UUID(int=0)
    statuses = [s for raw in status for s in raw.split(",") if s]
    bad = [
        {"field": "status", "message": f"unknown status {s!r}"} for s in statuses if s not in SESSION_STATUSES
    ]
    if bad:
        raise field_errors(bad)
    rows, next_cursor = await service.list_sessions(
        db,
        mentor_id=mentor_id,
        enterprise_id=enterprise_id,
        start_from=_utc(_parse_time(start_from, "from")),
        start_to=_utc(_parse_time(start_to, "to")),
        statuses=statuses,
        limit=limit,
        cursor=cursor,
    )
    return SessionPage(items=[_session_out(row) for row in rows], next_cursor=next_cursor)


def _utc(value: datetime | date | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


async def _session_for(
    db: SessionDep,
    principal: Principal,
    session_id: uuid.UUID,
    *,
    lock: bool = False,
    mentor_only: bool = False,
) -> Row[Any]:
    """The session if the caller may act on it: 404 for anchors and non-participants, 403 for
    integrators, and for an enterprise where only its mentor may act (``mentor_only``)."""
    access.allow(principal, "staff", "anchor", "enterprise", "mentor")
    if principal.role == "anchor":
        raise not_found("Session", session_id)
    row = await service.load_session(db, session_id, lock=lock)
    if row is None or not (principal.is_staff or access.is_participant(principal, row)):
        raise not_found("Session", session_id)
    if mentor_only and not principal.is_staff and not principal.owns("mentor", row.mentor_id):
        raise forbidden("Only the session's mentor or staff may record how it went.")
    return row


@router.get("/sessions/{session_id}", response_model=SessionOut, tags=["sessions"], summary="A session")
async def get_session(
    session_id: uuid.UUID, principal: Caller, db: SessionDep, response: Response
) -> SessionOut:
    row = await _session_for(db, principal, session_id)
    response.headers["ETag"] = etag(row.sequence)
    return _session_out(row)


@router.get(
    "/sessions/{session_id}/ics",
    tags=["calendars"],
    summary="A session's calendar invitation (REQUEST, or CANCEL once cancelled)",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {}}}},
)
async def session_ics(session_id: uuid.UUID, principal: Caller, db: SessionDep) -> Response:
    row = await _session_for(db, principal, session_id)
    body = await service.session_invitation(db, row)
    method = calendars.method_of(row.status)
    return Response(
        body,
        media_type=f"{calendars.CONTENT_TYPE}; method={method}",
        headers={
            "Content-Disposition": f'attachment; filename="session-{row.id}.ics"',
            "ETag": etag(row.sequence),
        },
    )


def _changed(row: Row[Any], response: Response) -> SessionOut:
    response.headers["ETag"] = etag(row.sequence)
    return _session_out(row)


@router.post(
    "/sessions/{session_id}/cancel",
    response_model=SessionOut,
    tags=["sessions"],
    summary="Cancel a session, with a reason (the mentor's cancellation notice applies)",
)
async def cancel_session(
    session_id: uuid.UUID,
    body: CancelIn,
    ctx: ContextDep,
    db: SessionDep,
    request: Request,
    response: Response,
) -> SessionOut:
    principal, now = ctx.principal, ctx.now
    row = await _session_for(db, principal, session_id, lock=True)
    check_if_match(request, etag(row.sequence))
    return _changed(await service.cancel_session(db, row, principal=principal, data=body, now=now), response)


@router.post(
    "/sessions/{session_id}/reschedule",
    response_model=SessionOut,
    tags=["sessions"],
    summary="Move a session to another free slot (same id and calendar UID, higher sequence)",
)
async def reschedule_session(
    session_id: uuid.UUID,
    body: RescheduleIn,
    ctx: ContextDep,
    db: SessionDep,
    request: Request,
    response: Response,
) -> SessionOut:
    principal, now, settings = ctx.principal, ctx.now, ctx.settings
    row = await _session_for(db, principal, session_id, lock=True)
    check_if_match(request, etag(row.sequence))
    moved = await service.reschedule_session(
        db, row, principal=principal, data=body, now=now, settings=settings
    )
    return _changed(moved, response)


@router.post(
    "/sessions/{session_id}/complete",
    response_model=SessionOut,
    tags=["sessions"],
    summary="Record the outcome, notes, action items and the milestones the mentor signs off",
)
async def complete_session(
    session_id: uuid.UUID,
    body: CompleteIn,
    ctx: ContextDep,
    db: SessionDep,
    request: Request,
    response: Response,
) -> SessionOut:
    principal, now = ctx.principal, ctx.now
    row = await _session_for(db, principal, session_id, lock=True, mentor_only=True)
    check_if_match(request, etag(row.sequence))
    return _changed(await service.complete_session(db, row, data=body, now=now), response)


@router.post(
    "/sessions/{session_id}/no-show",
    response_model=SessionOut,
    tags=["sessions"],
    summary="Record that a party did not come",
)
async def record_no_show(
    session_id: uuid.UUID,
    body: NoShowIn,
    ctx: ContextDep,
    db: SessionDep,
    request: Request,
    response: Response,
) -> SessionOut:
    principal, now = ctx.principal, ctx.now
    row = await _session_for(db, principal, session_id, lock=True, mentor_only=True)
    check_if_match(request, etag(row.sequence))
    return _changed(await service.record_no_show(db, row, data=body, now=now), response)
