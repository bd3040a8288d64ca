"""Routes of sessions: booking, the list, changes, outcomes, invitations."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.engine import Row

from services.mentoring import access, calendars, service
from services.mentoring.api.dependencies import (
    API,
    Caller,
    ContextDep,
    PageLimit,
    parse_time,
)
from services.mentoring.schemas import (
    CancelIn,
    CompleteIn,
    NoShowIn,
    RescheduleIn,
    SessionIn,
    SessionOut,
    SessionPage,
)
from services.mentoring.vocabulary import SESSION_STATUSES
from shared.db import SessionDep
from shared.http import DEFAULT_PAGE_SIZE, check_if_match, etag, json_response
from shared.idempotency import IdempotencyDep
from shared.principal import Principal
from shared.problems import field_errors, forbidden, not_found

router = APIRouter()

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
            SessionOut.model_validate(row),
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
        start_from=utc_of(parse_time(start_from, "from")),
        start_to=utc_of(parse_time(start_to, "to")),
        statuses=statuses,
        limit=limit,
        cursor=cursor,
    )
    return SessionPage(items=[SessionOut.model_validate(row) for row in rows], next_cursor=next_cursor)


def utc_of(value: datetime | date | None) -> datetime | None:
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


async def _session_to_change(
    session_id: uuid.UUID, principal: Caller, db: SessionDep, request: Request
) -> Row[Any]:
    """The session, locked, for a participant or staff to change while it is as they read it."""
    row = await _session_for(db, principal, session_id, lock=True)
    check_if_match(request, etag(row.sequence))
    return row


async def _session_to_record(
    session_id: uuid.UUID, principal: Caller, db: SessionDep, request: Request
) -> Row[Any]:
    """As :func:`_session_to_change`, for its mentor or staff only: how it went."""
    row = await _session_for(db, principal, session_id, lock=True, mentor_only=True)
    check_if_match(request, etag(row.sequence))
    return row


SessionToChange = Annotated[Row[Any], Depends(_session_to_change)]
SessionToRecord = Annotated[Row[Any], Depends(_session_to_record)]


@router.get("/sessions/{session_id}", response_model=SessionOut, tags=["sessions"], summary="A session")
async def get_session(
    session_id: uuid.UUID, principal: Caller, db: SessionDep, response: Response
) -> SessionOut:
    row = await _session_for(db, principal, session_id)
    response.headers["ETag"] = etag(row.sequence)
    return SessionOut.model_validate(row)


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
    return SessionOut.model_validate(row)


@router.post(
    "/sessions/{session_id}/cancel",
    response_model=SessionOut,
    tags=["sessions"],
    summary="Cancel a session, with a reason (the mentor's cancellation notice applies)",
)
async def cancel_session(
    body: CancelIn, row: SessionToChange, ctx: ContextDep, db: SessionDep, response: Response
) -> SessionOut:
    return _changed(
        await service.cancel_session(db, row, principal=ctx.principal, data=body, now=ctx.now), response
    )


@router.post(
    "/sessions/{session_id}/reschedule",
    response_model=SessionOut,
    tags=["sessions"],
    summary="Move a session to another free slot (same id and calendar UID, higher sequence)",
)
async def reschedule_session(
    body: RescheduleIn, row: SessionToChange, ctx: ContextDep, db: SessionDep, response: Response
) -> SessionOut:
    return _changed(
        await service.reschedule_session(
            db, row, principal=ctx.principal, data=body, now=ctx.now, settings=ctx.settings
        ),
        response,
    )


@router.post(
    "/sessions/{session_id}/complete",
    response_model=SessionOut,
    tags=["sessions"],
    summary="Record the outcome, notes, action items and the milestones the mentor signs off",
)
async def complete_session(
    body: CompleteIn, row: SessionToRecord, ctx: ContextDep, db: SessionDep, response: Response
) -> SessionOut:
    return _changed(await service.complete_session(db, row, data=body, now=ctx.now), response)


@router.post(
    "/sessions/{session_id}/no-show",
    response_model=SessionOut,
    tags=["sessions"],
    summary="Record that a party did not come",
)
async def record_no_show(
    body: NoShowIn, row: SessionToRecord, ctx: ContextDep, db: SessionDep, response: Response
) -> SessionOut:
    return _changed(await service.record_no_show(db, row, data=body, now=ctx.now), response)
