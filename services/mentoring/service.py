"""Use cases of the mentoring service.

They take a session, change state and add outbox events; they never commit.
``now`` is always an argument (the app's clock), so rules about notice and weeks
are the same in tests on fixed dates as in production.

No double booking: on PostgreSQL a booking takes the mentor's and the enterprise's
advisory locks (so bookings of one mentor or one enterprise take turns, and
the daily and weekly limits hold), checks, and inserts under two exclusion constraints
that refuse any overlap of a mentor's (buffers included) or an enterprise's booked
sessions whatever the concurrency; on SQLite the request's write transaction begins
with ``BEGIN IMMEDIATE``, so the check and the insert happen under the database's
single write lock.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import secrets
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import calendars, events, slots
from services.mentoring import recommendations as ranking
from services.mentoring.models import (
    BOOKED,
    CANCELLED,
    COMPLETED,
    COUNTED_STATUSES,
    ENTERPRISE_OVERLAP,
    MAX_BLOCKED_SPAN,
    MENTOR_OVERLAP,
    NO_SHOW,
    enterprises,
    mentor_expertise,
    mentors,
    sessions,
)
from services.mentoring.schemas import (
    AvailabilityIn,
    CancelIn,
    CompleteIn,
    MentorIn,
    MentorPatch,
    NoShowIn,
    RescheduleIn,
    SessionIn,
    clock_minutes,
)
from services.mentoring.settings import MentoringSettings
from shared import outbox
from shared.events import CloudEvent, new_event
from shared.http import decode_cursor, encode_cursor
from shared.principal import Principal
from shared.problems import Problem, conflict, field_errors

T = TypeVar("T")

# Sessions of a mentor within this much of a range decide its day and week counts
# (its local day and buffers only, when the mentor has no weekly limit).
WEEK_MARGIN = timedelta(days=8)
NEAR_MARGIN = timedelta(days=2)


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# -- mentors ------------------------------------------------------------------------------------

# Rules parsed from a mentor's row, by (mentor, version): every change of the rules (or of the
# weekly limit) bumps the version, so an entry never goes stale; the oldest go first.
_RULES_CACHE: dict[tuple[uuid.UUID, int], slots.Rules] = {}


def _availability_values(availability: AvailabilityIn) -> dict[str, Any]:
    weekly = sorted(availability.weekly, key=lambda w: (w.weekday, clock_minutes(w.start)))
    overrides = sorted(availability.overrides, key=lambda o: o.date)
    return {
        "weekly_windows": [{"weekday": w.weekday, "start": w.start, "end": w.end} for w in weekly],
        "date_overrides": [
            {
                "date": o.date.isoformat(),
                "windows": [
                    {"start": w.start, "end": w.end}
                    for w in sorted(o.windows, key=lambda w: clock_minutes(w.start))
                ],
            }
            for o in overrides
        ],
        "buffer_before_minutes": availability.buffer_before_minutes,
        "buffer_after_minutes": availability.buffer_after_minutes,
        "minimum_notice_minutes": availability.minimum_notice_minutes,
        "cancellation_notice_minutes": availability.cancellation_notice_minutes,
        "slot_interval_minutes": availability.slot_interval_minutes,
        "booking_horizon_days": availability.booking_horizon_days,
        "max_sessions_per_day": availability.max_sessions_per_day,
    }


def rules_of(mentor: Row[Any]) -> slots.Rules:
    """A mentor row's availability rules, ready for slot computation (parsed once per version)."""
    key = (mentor.id, mentor.version)
    found = _RULES_CACHE.get(key)
    if found is None:
        found = _RULES_CACHE[key] = _rules_from_row(mentor)
        if len(_RULES_CACHE) > 4096:
            _RULES_CACHE.pop(next(iter(_RULES_CACHE)))
    return found


def _rules_from_row(mentor: Row[Any]) -> slots.Rules:
    weekly: dict[int, list[slots.Window]] = defaultdict(list)
    for window in mentor.weekly_windows:
        weekly[window["weekday"]].append(
            slots.Window(clock_minutes(window["start"]), clock_minutes(window["end"]))
        )
    overrides = {
        date.fromisoformat(o["date"]): tuple(
            slots.Window(clock_minutes(w["start"]), clock_minutes(w["end"])) for w in o["windows"]
        )
        for o in mentor.date_overrides
    }
    return slots.Rules(
        timezone=ZoneInfo(mentor.timezone),
        weekly=weekly,
        overrides=overrides,
        buffer_before=timedelta(minutes=mentor.buffer_before_minutes),
        buffer_after=timedelta(minutes=mentor.buffer_after_minutes),
        minimum_notice=timedelta(minutes=mentor.minimum_notice_minutes),
        slot_interval=timedelta(minutes=mentor.slot_interval_minutes),
        booking_horizon=timedelta(days=mentor.booking_horizon_days),
        max_per_day=mentor.max_sessions_per_day,
        max_per_week=mentor.max_sessions_per_week,
    )


def _mentor_event(type_: str, mentor: Row[Any]) -> CloudEvent:
    payload = events.MentorPayload(
        mentor_id=mentor.id,
        version=mentor.version,
        name=mentor.name,
        organisation=mentor.organisation,
        expertise=list(mentor.expertise),
        timezone=mentor.timezone,
    )
    return new_event(type_, payload, source=events.SOURCE, subject=str(mentor.id))


# PostgreSQL: the mentor's row, and the mentor's and the enterprise's advisory locks, in one
# round trip. Every booking and reschedule takes them in this order (a select list is evaluated
# left to right), so they never deadlock on each other. Advisory locks, not a lock of the
# mentor's row: a row lock writes the row.
def _mentor_with_locks(mentor_id: uuid.UUID, enterprise_id: uuid.UUID) -> sa.Select[Any]:
    return sa.select(
        mentors,
        sa.func.pg_advisory_xact_lock(_advisory_key(mentor_id)),
        sa.func.pg_advisory_xact_lock(_advisory_key(enterprise_id)),
    ).where(mentors.c.id == mentor_id)


def _advisory_key(party_id: uuid.UUID) -> int:
    """A mentor's or an enterprise's advisory lock: 64 bits of its (random) id."""
    return int.from_bytes(party_id.bytes[:8], "big", signed=True)


async def load_mentor(session: AsyncSession, mentor_id: uuid.UUID, *, lock: bool = False) -> Row[Any] | None:
    """A mentor, or None; ``lock`` holds its row until the commit (PostgreSQL; SQLite's
    write transactions already hold the database lock). FOR NO KEY UPDATE: changes of a mentor
    take turns (the ETag is checked under it); foreign keys to the mentor still pass."""
    statement = sa.select(mentors).where(mentors.c.id == mentor_id)
    if lock:
        statement = statement.with_for_update(key_share=True)
    return (await session.execute(statement)).first()


async def lock_for_booking(
    session: AsyncSession, mentor_id: uuid.UUID, enterprise_id: uuid.UUID
) -> Row[Any] | None:
    """The mentor, with their bookings and the enterprise's held until the commit.

    On PostgreSQL two bookings of one mentor, or of one enterprise, take turns here (advisory
    locks of the transaction, one for the mentor and one for the enterprise), so the
    checks that follow see every committed session and the exclusion constraints are a last
    guard rather than a race (two transactions inserting conflicting rows at the same moment
    would each wait for the other on the constraint: a deadlock). On SQLite the write
    transaction already holds the database lock (BEGIN IMMEDIATE)."""
    if not _is_postgres(session):
        return await load_mentor(session, mentor_id)
    return (await session.execute(_mentor_with_locks(mentor_id, enterprise_id))).first()


async def _replace_expertise(session: AsyncSession, mentor_id: uuid.UUID, tags: Sequence[str]) -> None:
    await session.execute(sa.delete(mentor_expertise).where(mentor_expertise.c.mentor_id == mentor_id))
    if tags:
        await session.execute(
            sa.insert(mentor_expertise), [{"mentor_id": mentor_id, "tag": tag} for tag in tags]
        )


async def register_mentor(session: AsyncSession, data: MentorIn, now: datetime) -> Row[Any]:
    availability = data.availability or AvailabilityIn()
    mentor_id = uuid.uuid4()
    await session.execute(
        sa.insert(mentors).values(
            id=mentor_id,
            version=1,
            name=data.name,
            email=data.email,
            organisation=data.organisation,
            anchor_id=data.anchor_id,
            bio=data.bio,
            expertise=list(data.expertise),
            timezone=data.timezone,
            session_lengths=list(data.session_lengths_minutes),
            max_active_mentees=data.max_active_mentees,
            max_sessions_per_week=data.max_sessions_per_week,
            active=True,
            created_at=now,
            updated_at=now,
            **_availability_values(availability),
        )
    )
    await _replace_expertise(session, mentor_id, data.expertise)
    mentor = await load_mentor(session, mentor_id)
    assert mentor is not None
    await outbox.add(session, _mentor_event(events.MENTOR_REGISTERED, mentor))
    return mentor


async def update_mentor(
    session: AsyncSession, mentor: Row[Any], patch: MentorPatch, now: datetime
) -> Row[Any]:
    changes: dict[str, Any] = {}
    for field in patch.model_fields_set:
        value = getattr(patch, field)
        column = "session_lengths" if field == "session_lengths_minutes" else field
        if getattr(mentor, column) != value:
            changes[column] = value
    if not changes:
        return mentor
    await session.execute(
        sa.update(mentors)
        .where(mentors.c.id == mentor.id)
        .values(**changes, version=mentors.c.version + 1, updated_at=now)
    )
    if "expertise" in changes:
        await _replace_expertise(session, mentor.id, changes["expertise"])
    updated = await load_mentor(session, mentor.id)
    assert updated is not None
    await outbox.add(session, _mentor_event(events.MENTOR_UPDATED, updated))
    return updated


async def set_availability(
    session: AsyncSession, mentor: Row[Any], availability: AvailabilityIn, now: datetime
) -> Row[Any]:
    """Replace the mentor's availability rules. Booked sessions stay as they are."""
    await session.execute(
        sa.update(mentors)
        .where(mentors.c.id == mentor.id)
        .values(
            **_availability_values(availability),
            timezone=availability.timezone or mentor.timezone,
            version=mentors.c.version + 1,
            updated_at=now,
        )
    )
    updated = await load_mentor(session, mentor.id)
    assert updated is not None
    await outbox.add(session, _mentor_event(events.AVAILABILITY_CHANGED, updated))
    return updated


async def list_mentors(
    session: AsyncSession,
    *,
    expertise: Sequence[str],
    organisation: str | None,
    active: bool | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row[Any]], str | None]:
    query = sa.select(mentors).order_by(mentors.c.created_at, mentors.c.id).limit(limit + 1)
    if expertise:
        query = query.where(
            mentors.c.id.in_(
                sa.select(mentor_expertise.c.mentor_id).where(mentor_expertise.c.tag.in_(expertise))
            )
        )
    if organisation is not None:
        query = query.where(mentors.c.organisation == organisation)
    if active is not None:
        query = query.where(mentors.c.active == active)
    after = decode_cursor(cursor, 2)
    if after is not None:
        created_at, mentor_id = _cursor_values(after)
        query = query.where(sa.tuple_(mentors.c.created_at, mentors.c.id) > sa.tuple_(created_at, mentor_id))
    rows = list((await session.execute(query)).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].created_at.isoformat(), str(rows[-1].id)])
    return rows, next_cursor


def _cursor_values(values: list[Any]) -> tuple[datetime, uuid.UUID]:
    try:
        return datetime.fromisoformat(values[0]), uuid.UUID(values[1])
    except (TypeError, ValueError) as exc:
        raise field_errors([{"field": "cursor", "message": "not a cursor issued by this API"}]) from exc


# -- calendar feed tokens -----------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def rotate_calendar_token(session: AsyncSession, mentor: Row[Any], now: datetime) -> str:
    """A new secret feed token; the previous one stops working with this commit."""
    token = secrets.token_urlsafe(32)
    await session.execute(
        sa.update(mentors)
        .where(mentors.c.id == mentor.id)
        .values(calendar_token_hash=_token_hash(token), calendar_token_rotated_at=now)
    )
    return token


async def revoke_calendar_token(session: AsyncSession, mentor: Row[Any], now: datetime) -> None:
    await session.execute(
        sa.update(mentors)
        .where(mentors.c.id == mentor.id)
        .values(calendar_token_hash=None, calendar_token_rotated_at=now)
    )


def feed_token_valid(mentor: Row[Any] | None, token: str | None) -> bool:
    if mentor is None or mentor.calendar_token_hash is None or not token:
        return False
    return hmac.compare_digest(_token_hash(token), mentor.calendar_token_hash)


# -- slots --------------------------------------------------------------------------------------

Bound = datetime | date  # a date means local midnight in the mentor's zone


def resolve_bound(bound: Bound, zone: ZoneInfo) -> datetime:
    if isinstance(bound, datetime):
        return bound.astimezone(UTC)
    return slots.wall_clock_instant(bound, 0, zone)


def _occupying(low: Any, high: Any, *, starts_after: Any = None, starts_before: Any = None) -> list[Any]:
    """Sessions whose occupied time (buffers included) meets ``[low, high)``. They start within
    MAX_BLOCKED_SPAN of it (a constraint of the table): the bounds on ``starts_at`` add nothing
    to the answer, but let the query read a range of the ``(mentor_id, starts_at)`` index
    instead of the mentor's whole history. (Given as bound parameters, pass their names.)"""
    if starts_after is None:
        starts_after, starts_before = low - MAX_BLOCKED_SPAN, high + MAX_BLOCKED_SPAN
    return [
        sessions.c.blocked_from < high,
        sessions.c.blocked_until > low,
        sessions.c.starts_at > starts_after,
        sessions.c.starts_at < starts_before,
    ]


async def _taken(
    session: AsyncSession,
    mentor_ids: Iterable[uuid.UUID] | sa.Select[Any],
    start: datetime,
    end: datetime,
) -> dict[uuid.UUID, list[slots.Taken]]:
    """The mentors' sessions that are not cancelled and touch ``[start, end)``, with margins
    wide enough to count the whole local days and weeks around it."""
    ids = mentor_ids if isinstance(mentor_ids, sa.Select) else list(mentor_ids)
    query = sa.select(
        sessions.c.mentor_id,
        sessions.c.starts_at,
        sessions.c.blocked_from,
        sessions.c.blocked_until,
        sessions.c.status,
    ).where(
        sessions.c.mentor_id.in_(ids),
        sessions.c.status.in_(COUNTED_STATUSES),
        *_occupying(start - WEEK_MARGIN, end + WEEK_MARGIN),
    )
    found: dict[uuid.UUID, list[slots.Taken]] = defaultdict(list)
    for row in await session.execute(query):
        found[row.mentor_id].append(
            slots.Taken(
                start=row.starts_at,
                blocked_from=row.blocked_from,
                blocked_until=row.blocked_until,
                blocks=row.status == BOOKED,
            )
        )
    return found


def _check_duration(mentor: Row[Any], minutes: int, field: str) -> None:
    if minutes not in mentor.session_lengths:
        lengths = ", ".join(str(n) for n in mentor.session_lengths)
        raise field_errors([{"field": field, "message": f"this mentor offers sessions of {lengths} minutes"}])


def check_range(start: datetime, end: datetime, max_days: int) -> None:
    if end <= start:
        raise field_errors([{"field": "end", "message": "must be after start"}])
    if end - start > timedelta(days=max_days):
        raise field_errors([{"field": "end", "message": f"the range is at most {max_days} days"}])


async def mentor_slots(
    session: AsyncSession,
    mentor: Row[Any],
    *,
    start: Bound,
    end: Bound,
    duration_minutes: int,
    now: datetime,
    max_days: int,
) -> list[datetime]:
    """The mentor's free start times in the range, as instants in the mentor's zone."""
    _check_duration(mentor, duration_minutes, "duration_minutes")
    zone = ZoneInfo(mentor.timezone)
    range_start, range_end = resolve_bound(start, zone), resolve_bound(end, zone)
    check_range(range_start, range_end, max_days)
    if not mentor.active:
        return []
    taken = await _taken(session, [mentor.id], range_start, range_end)
    found = slots.free_slots(
        rules_of(mentor), timedelta(minutes=duration_minutes), range_start, range_end, now, taken[mentor.id]
    )
    return [instant.astimezone(zone) for instant in found]


# What slot computation reads of a mentor (a search over hundreds of mentors reads nothing else).
_RULE_COLUMNS = [
    mentors.c.id,
    mentors.c.version,
    mentors.c.timezone,
    mentors.c.session_lengths,
    mentors.c.weekly_windows,
    mentors.c.date_overrides,
    mentors.c.buffer_before_minutes,
    mentors.c.buffer_after_minutes,
    mentors.c.minimum_notice_minutes,
    mentors.c.slot_interval_minutes,
    mentors.c.booking_horizon_days,
    mentors.c.max_sessions_per_day,
    mentors.c.max_sessions_per_week,
]


@dataclass(frozen=True)
class MentorSlot:
    mentor_id: uuid.UUID
    timezone: str
    start: datetime


async def slots_of_mentors(
    session: AsyncSession,
    *,
    expertise: Sequence[str],
    mentor_ids: Sequence[uuid.UUID],
    start: Bound,
    end: Bound,
    duration_minutes: int,
    now: datetime,
    max_days: int,
    limit: int,
    cursor: str | None,
) -> tuple[list[MentorSlot], str | None]:
    """Free slots of every active mentor with the expertise (or in the list) offering that length,
    soonest first; a date bound is midnight in each mentor's own zone."""
    chosen = sa.select(mentors.c.id).where(mentors.c.active.is_(True))
    if expertise:
        chosen = chosen.where(
            mentors.c.id.in_(
                sa.select(mentor_expertise.c.mentor_id).where(mentor_expertise.c.tag.in_(expertise))
            )
        )
    if mentor_ids:
        chosen = chosen.where(mentors.c.id.in_(mentor_ids))
    rows = (await session.execute(sa.select(*_RULE_COLUMNS).where(mentors.c.id.in_(chosen)))).all()
    offering = [row for row in rows if duration_minutes in row.session_lengths]
    after = decode_cursor(cursor, 2)
    after_instant, after_mentor = (None, "")
    if after is not None:
        instant, mentor_id = _cursor_values(after)
        after_instant, after_mentor = instant.astimezone(UTC), str(mentor_id)
    bounds = {}
    for row in offering:
        zone = ZoneInfo(row.timezone)
        bounds[row.id] = (resolve_bound(start, zone), resolve_bound(end, zone))
        check_range(*bounds[row.id], max_days)
    if not offering:
        return [], None
    overall_start = min(b[0] for b in bounds.values())
    overall_end = max(b[1] for b in bounds.values())
    taken = await _taken(session, [row.id for row in offering], overall_start, overall_end)
    duration = timedelta(minutes=duration_minutes)

    def stream(row: Row[Any]) -> Iterator[tuple[datetime, str, Row[Any]]]:
        key = str(row.id)
        range_start, range_end = bounds[row.id]
        if after_instant is not None:
            range_start = max(range_start, after_instant)
        for instant in slots.iter_free_slots(
            rules_of(row), duration, range_start, range_end, now, taken[row.id]
        ):
            if instant != after_instant or key > after_mentor:
                yield instant, key, row

    # Each mentor's slots come soonest first: merging them lazily computes only what the page shows.
    merged = heapq.merge(*(stream(row) for row in offering), key=lambda item: (item[0], item[1]))
    page = list(itertools.islice(merged, limit + 1))
    items = [
        MentorSlot(mentor_id=row.id, timezone=row.timezone, start=instant.astimezone(ZoneInfo(row.timezone)))
        for instant, _, row in page[:limit]
    ]
    next_cursor = (
        encode_cursor([page[limit - 1][0].isoformat(), page[limit - 1][1]]) if len(page) > limit else None
    )
    return items, next_cursor


# -- sessions: reading ----------------------------------------------------------------------------


async def load_session(
    session: AsyncSession, session_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    query = sa.select(sessions).where(sessions.c.id == session_id)
    if lock:
        query = query.with_for_update(key_share=True)
    return (await session.execute(query)).first()


def is_participant(principal: Principal, row: Row[Any]) -> bool:
    return principal.owns("enterprise", row.enterprise_id) or principal.owns("mentor", row.mentor_id)


async def list_sessions(
    session: AsyncSession,
    *,
    mentor_id: uuid.UUID | None,
    enterprise_id: uuid.UUID | None,
    start_from: datetime | None,
    start_to: datetime | None,
    statuses: Sequence[str],
    limit: int,
    cursor: str | None,
) -> tuple[list[Row[Any]], str | None]:
    query = sa.select(sessions).order_by(sessions.c.starts_at, sessions.c.id).limit(limit + 1)
    if mentor_id is not None:
        query = query.where(sessions.c.mentor_id == mentor_id)
    if enterprise_id is not None:
        query = query.where(sessions.c.enterprise_id == enterprise_id)
    if start_from is not None:
        query = query.where(sessions.c.starts_at >= start_from)
    if start_to is not None:
        query = query.where(sessions.c.starts_at < start_to)
    if statuses:
        query = query.where(sessions.c.status.in_(statuses))
    after = decode_cursor(cursor, 2)
    if after is not None:
        starts_at, session_id = _cursor_values(after)
        query = query.where(sa.tuple_(sessions.c.starts_at, sessions.c.id) > sa.tuple_(starts_at, session_id))
    rows = list((await session.execute(query)).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1].starts_at.isoformat(), str(rows[-1].id)])
    return rows, next_cursor


# -- sessions: booking ----------------------------------------------------------------------------


def _taken_problem(
    party: str, row: Row[Any] | None, mentor_id: uuid.UUID, enterprise_id: uuid.UUID
) -> Problem:
    who = f"mentor {mentor_id}" if party == "mentor" else f"enterprise {enterprise_id}"
    detail = f"The slot is no longer free: {who} already has a booked session at that time"
    named: dict[str, Any] = {"party": party}
    if party == "mentor":
        named["mentor_id"] = str(mentor_id)
    else:
        named["enterprise_id"] = str(enterprise_id)
    if row is not None:
        zone = ZoneInfo(row.timezone)
        start, end = row.starts_at.astimezone(zone).isoformat(), row.ends_at.astimezone(zone).isoformat()
        detail += f" (session {row.id}, {start} to {end})"
        named |= {"session_id": str(row.id), "start": start, "end": end}
    problem = conflict(detail + ".", conflict=named)
    problem.title = "Slot taken"
    problem.type = "slot-taken"
    return problem


def _refusal_problem(
    verdict: slots.Verdict,
    rules: slots.Rules,
    mentor: Row[Any],
    conflicting: Row[Any] | None,
    enterprise_id: uuid.UUID,
) -> Problem:
    refusal = verdict.refusal
    if refusal is slots.Refusal.TAKEN:
        return _taken_problem("mentor", conflicting, mentor.id, enterprise_id)
    if refusal is slots.Refusal.DAY_FULL:
        return Problem(
            409,
            "Mentor's day is full",
            f"The mentor takes at most {rules.max_per_day} sessions a day and that day is full.",
            type="day-full",
        )
    if refusal is slots.Refusal.WEEK_FULL:
        return Problem(
            409,
            "Mentor's week is full",
            f"The mentor takes at most {rules.max_per_week} sessions a week and that week is full.",
            type="week-full",
        )
    messages = {
        slots.Refusal.TOO_SOON: f"the mentor needs {mentor.minimum_notice_minutes} minutes' notice",
        slots.Refusal.TOO_FAR_AHEAD: (
            f"the mentor takes bookings at most {mentor.booking_horizon_days} days ahead"
        ),
        slots.Refusal.OUTSIDE_AVAILABILITY: "not one of the mentor's slots for this length: outside their "
        f"availability, or not on their {mentor.slot_interval_minutes}-minute steps",
    }
    return field_errors([{"field": "start", "message": messages[refusal]}])  # type: ignore[index]


async def _conflicting(
    session: AsyncSession,
    party: str,
    *,
    mentor_id: uuid.UUID,
    enterprise_id: uuid.UUID,
    low: datetime,
    high: datetime,
    excluding: uuid.UUID | None,
) -> Row[Any] | None:
    """A booked session of the mentor (its occupied time) or of the enterprise overlapping ``[low, high)``."""
    if party == "mentor":
        query = sa.select(sessions).where(sessions.c.mentor_id == mentor_id, *_occupying(low, high))
    else:
        query = sa.select(sessions).where(
            sessions.c.enterprise_id == enterprise_id,
            sessions.c.starts_at < high,
            sessions.c.ends_at > low,
            sessions.c.starts_at > low - MAX_BLOCKED_SPAN,
        )
    query = query.where(sessions.c.status == BOOKED).order_by(sessions.c.starts_at).limit(1)
    if excluding is not None:
        query = query.where(sessions.c.id != excluding)
    return (await session.execute(query)).first()


async def _write_guarded(
    session: AsyncSession,
    write: Awaitable[T],
    *,
    mentor_id: uuid.UUID,
    enterprise_id: uuid.UUID,
    start: datetime,
    end: datetime,
    blocked: tuple[datetime, datetime],
    excluding: uuid.UUID | None,
) -> T:
    """Insert or move a booked session (``write``). Should PostgreSQL's exclusion constraints
    refuse it anyway (a writer that did not take the locks), the request fails with a 409
    naming the session it collided with, looked up outside the failed transaction."""
    try:
        return await write
    except IntegrityError as exc:
        message = str(exc.orig)
        if ENTERPRISE_OVERLAP in message:
            party, low, high = "enterprise", start, end
        elif MENTOR_OVERLAP in message:
            party, (low, high) = "mentor", blocked
        else:
            raise
        async with AsyncSession(session.bind) as other:
            row = await _conflicting(
                other,
                party,
                mentor_id=mentor_id,
                enterprise_id=enterprise_id,
                low=low,
                high=high,
                excluding=excluding,
            )
        raise _taken_problem(party, row, mentor_id, enterprise_id) from exc


async def _active_mentees(
    session: AsyncSession, mentor_ids: Iterable[uuid.UUID] | None, now: datetime, settings: MentoringSettings
) -> dict[uuid.UUID, set[uuid.UUID]]:
    query = (
        sa.select(sessions.c.mentor_id, sessions.c.enterprise_id)
        .where(
            sessions.c.status.in_(COUNTED_STATUSES),
            sessions.c.starts_at >= now - timedelta(days=settings.mentee_active_days),
        )
        .distinct()
    )
    if mentor_ids is not None:
        query = query.where(sessions.c.mentor_id.in_(list(mentor_ids)))
    found: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for row in await session.execute(query):
        found[row.mentor_id].add(row.enterprise_id)
    return found


def _session_payload_fields(row: Row[Any] | dict[str, Any]) -> dict[str, Any]:
    get = row.__getitem__ if isinstance(row, dict) else lambda key: getattr(row, key)
    return {
        "session_id": get("id"),
        "sequence": get("sequence"),
        "mentor_id": get("mentor_id"),
        "enterprise_id": get("enterprise_id"),
        "start": get("starts_at"),
        "end": get("ends_at"),
        "timezone": get("timezone"),
        "topic": get("topic"),
        "status": get("status"),
        "milestone_code": get("milestone_code"),
    }


def _session_event(type_: str, row: Row[Any] | dict[str, Any], **extra: Any) -> CloudEvent:
    models = {
        events.SESSION_CANCELLED: events.SessionCancelledPayload,
        events.SESSION_COMPLETED: events.SessionCompletedPayload,
        events.SESSION_REMINDER_DUE: events.SessionReminderPayload,
    }
    payload = models.get(type_, events.SessionPayload)(**_session_payload_fields(row), **extra)
    return new_event(type_, payload, source=events.SOURCE, subject=str(payload.session_id))


# The columns of a session near a booking, as _sort_around reads them.
_NEAR_COLUMNS = (
    sessions.c.id,
    sessions.c.mentor_id,
    sessions.c.enterprise_id,
    sessions.c.starts_at,
    sessions.c.ends_at,
    sessions.c.blocked_from,
    sessions.c.blocked_until,
    sessions.c.status,
    sessions.c.timezone,
)


def _margin(mentor: Row[Any]) -> timedelta:
    return WEEK_MARGIN if mentor.max_sessions_per_week is not None else NEAR_MARGIN


async def _around(
    session: AsyncSession,
    mentor: Row[Any],
    enterprise_id: uuid.UUID,
    start: datetime,
    end: datetime,
    *,
    excluding: uuid.UUID | None = None,
) -> tuple[list[slots.Taken], Row[Any] | None]:
    """In one query: the mentor's sessions that matter to a new one (those its buffers could
    touch, and its local day and week when limits count them), and a booked session of the
    enterprise overlapping it, if there is one."""
    margin = _margin(mentor)
    mentors_own = sa.and_(
        sessions.c.mentor_id == mentor.id,
        sessions.c.status.in_(COUNTED_STATUSES),
        *_occupying(start - margin, end + margin),
    )
    enterprises_own = sa.and_(
        sessions.c.enterprise_id == enterprise_id,
        sessions.c.status == BOOKED,
        sessions.c.starts_at < end,
        sessions.c.ends_at > start,
        # A session is shorter than MAX_BLOCKED_SPAN: read a range of (enterprise_id, starts_at).
        sessions.c.starts_at > start - MAX_BLOCKED_SPAN,
    )
    query = sa.select(*_NEAR_COLUMNS).where(sa.or_(mentors_own, enterprises_own))
    if excluding is not None:
        query = query.where(sessions.c.id != excluding)
    rows = (await session.execute(query)).all()
    return _sort_around(rows, mentor.id, enterprise_id, start, end)


def _sort_around(
    rows: Iterable[Any], mentor_id: uuid.UUID, enterprise_id: uuid.UUID, start: datetime, end: datetime
) -> tuple[list[slots.Taken], Any]:
    """The mentor's sessions as :class:`slots.Taken` (the session as ``ref``), and the soonest
    booked session of the enterprise overlapping ``[start, end)``, if any."""
    taken: list[slots.Taken] = []
    clash: Any = None
    for row in rows:
        if row.mentor_id == mentor_id and row.status in COUNTED_STATUSES:
            taken.append(
                slots.Taken(
                    start=row.starts_at,
                    blocked_from=row.blocked_from,
                    blocked_until=row.blocked_until,
                    blocks=row.status == BOOKED,
                    ref=row,
                )
            )
        overlapping = row.starts_at < end and row.ends_at > start
        theirs = row.enterprise_id == enterprise_id and row.status == BOOKED and overlapping
        if theirs and (clash is None or row.starts_at < clash.starts_at):
            clash = row
    return taken, clash


def _refused(
    verdict: slots.Verdict, rules: slots.Rules, mentor: Row[Any], enterprise_id: uuid.UUID
) -> Problem:
    conflicting = verdict.conflict.ref if verdict.conflict is not None else None
    return _refusal_problem(verdict, rules, mentor, conflicting, enterprise_id)  # type: ignore[arg-type]


async def book_session(
    session: AsyncSession,
    *,
    principal: Principal,
    data: SessionIn,
    now: datetime,
    settings: MentoringSettings,
) -> dict[str, Any]:
    """Book a free slot, or refuse with a problem naming why (and the session in the way):
    lock and read the mentor, read the sessions nearby, check the slot, insert, add the event."""
    start = data.start.astimezone(UTC)
    duration = timedelta(minutes=data.duration_minutes)
    end = start + duration
    mentor = await lock_for_booking(session, data.mentor_id, data.enterprise_id)
    if mentor is None:
        raise field_errors([{"field": "mentor_id", "message": "no mentor with this id"}])
    if not mentor.active:
        raise field_errors([{"field": "mentor_id", "message": "this mentor is not taking bookings"}])
    _check_duration(mentor, data.duration_minutes, "duration_minutes")
    rules = rules_of(mentor)
    blocked = slots.occupied_range(rules, start, duration)
    taken, clash = await _around(session, mentor, data.enterprise_id, start, end)
    verdict = slots.check_slot(rules, duration, start, now, taken)
    if not verdict.free:
        raise _refused(verdict, rules, mentor, data.enterprise_id)
    if clash is not None:
        raise _taken_problem("enterprise", clash, mentor.id, data.enterprise_id)
    if mentor.max_active_mentees is not None:
        mentees = (await _active_mentees(session, [mentor.id], now, settings))[mentor.id]
        if data.enterprise_id not in mentees and len(mentees) >= mentor.max_active_mentees:
            raise Problem(
                409,
                "Mentor at capacity",
                f"The mentor already has {len(mentees)} active mentees, their maximum.",
                type="mentor-at-capacity",
            )

    row = {
        "id": uuid.uuid4(),
        "mentor_id": mentor.id,
        "enterprise_id": data.enterprise_id,
        "starts_at": start,
        "ends_at": end,
        "blocked_from": blocked[0],
        "blocked_until": blocked[1],
        "timezone": mentor.timezone,
        "duration_minutes": data.duration_minutes,
        "topic": data.topic,
        "milestone_code": data.milestone_code,
        "status": BOOKED,
        "sequence": 0,
        "booked_by_role": principal.role,
        "booked_by": principal.actor,
        "scheduled_at": now,
        "created_at": now,
        "updated_at": now,
    }
    await _write_guarded(
        session,
        session.execute(sa.insert(sessions), row),
        mentor_id=mentor.id,
        enterprise_id=data.enterprise_id,
        start=start,
        end=end,
        blocked=blocked,
        excluding=None,
    )
    await outbox.add(session, _session_event(events.SESSION_BOOKED, row))
    return row


# -- sessions: changes ----------------------------------------------------------------------------


def _require_booked(row: Row[Any], action: str) -> None:
    if row.status != BOOKED:
        raise Problem(
            409,
            "Session not booked",
            f"Only a booked session can be {action}; this one is {row.status.replace('_', ' ')}.",
            type="session-not-booked",
            status_now=row.status,
        )


def _require_notice(
    row: Row[Any], mentor: Row[Any], principal: Principal, now: datetime, action: str
) -> None:
    """Participants change a session only before it starts and with the mentor's cancellation
    notice; staff may do it at any time before it starts."""
    if row.starts_at <= now:
        raise Problem(
            409,
            "Session already started",
            f"A session cannot be {action} once it has started.",
            type="session-started",
        )
    notice = timedelta(minutes=mentor.cancellation_notice_minutes)
    if not principal.is_staff and row.starts_at - now < notice:
        raise Problem(
            409,
            "Too late to change",
            f"This mentor's sessions can be {action} up to {mentor.cancellation_notice_minutes} minutes "
            "before they start; ask the incubator staff.",
            type="cancellation-notice",
        )


async def _reload(session: AsyncSession, session_id: uuid.UUID) -> Row[Any]:
    row = await load_session(session, session_id)
    assert row is not None
    return row


async def reschedule_session(
    session: AsyncSession,
    row: Row[Any],
    *,
    principal: Principal,
    data: RescheduleIn,
    now: datetime,
    settings: MentoringSettings,
) -> Row[Any]:
    """Move a booked session (same id, same UID, higher sequence) to another free slot."""
    _require_booked(row, "rescheduled")
    mentor = await lock_for_booking(session, row.mentor_id, row.enterprise_id)
    assert mentor is not None
    _require_notice(row, mentor, principal, now, "rescheduled")
    minutes = data.duration_minutes or row.duration_minutes
    if minutes != row.duration_minutes:
        _check_duration(mentor, minutes, "duration_minutes")
    rules = rules_of(mentor)
    start = data.start.astimezone(UTC)
    duration = timedelta(minutes=minutes)
    end = start + duration
    if start == row.starts_at and minutes == row.duration_minutes:
        return row
    blocked = slots.occupied_range(rules, start, duration)
    taken, clash = await _around(session, mentor, row.enterprise_id, start, end, excluding=row.id)
    verdict = slots.check_slot(rules, duration, start, now, taken)
    if not verdict.free:
        raise _refused(verdict, rules, mentor, row.enterprise_id)
    if clash is not None:
        raise _taken_problem("enterprise", clash, mentor.id, row.enterprise_id)
    await _write_guarded(
        session,
        session.execute(
            sa.update(sessions)
            .where(sessions.c.id == row.id)
            .values(
                starts_at=start,
                ends_at=end,
                blocked_from=blocked[0],
                blocked_until=blocked[1],
                duration_minutes=minutes,
                timezone=mentor.timezone,
                sequence=sessions.c.sequence + 1,
                reschedule_reason=data.reason,
                scheduled_at=now,  # its reminders are counted from now, for the new start
                updated_at=now,
            ),
        ),
        mentor_id=mentor.id,
        enterprise_id=row.enterprise_id,
        start=start,
        end=end,
        blocked=blocked,
        excluding=row.id,
    )
    moved = await _reload(session, row.id)
    await outbox.add(session, _session_event(events.SESSION_RESCHEDULED, moved))
    return moved


async def cancel_session(
    session: AsyncSession, row: Row[Any], *, principal: Principal, data: CancelIn, now: datetime
) -> Row[Any]:
    _require_booked(row, "cancelled")
    mentor = await load_mentor(session, row.mentor_id)
    assert mentor is not None
    _require_notice(row, mentor, principal, now, "cancelled")
    values = {"cancel_reason": data.reason, "cancelled_by_role": principal.role, "cancelled_at": now}
    return await _end_session(
        session, row, CANCELLED, events.SESSION_CANCELLED, now, values, reason=data.reason
    )


async def _end_session(
    session: AsyncSession,
    row: Row[Any],
    status: str,
    event_type: str,
    now: datetime,
    values: dict[str, Any],
    **event_extra: Any,
) -> Row[Any]:
    """Move a booked session to ``status`` (a higher sequence) and announce it."""
    await session.execute(
        sa.update(sessions)
        .where(sessions.c.id == row.id)
        .values(status=status, sequence=sessions.c.sequence + 1, updated_at=now, **values)
    )
    ended = await _reload(session, row.id)
    await outbox.add(session, _session_event(event_type, ended, **event_extra))
    return ended


def _require_started(row: Row[Any], now: datetime, action: str) -> None:
    if now < row.starts_at:
        raise Problem(
            409,
            "Session not started",
            f"A session can be {action} only once it has started ({row.starts_at.isoformat()}).",
            type="session-not-started",
        )


async def complete_session(
    session: AsyncSession, row: Row[Any], *, data: CompleteIn, now: datetime
) -> Row[Any]:
    """Record the outcome and the milestones the mentor signs off (the enterprises service
    records the sign-offs from the event)."""
    _require_booked(row, "completed")
    _require_started(row, now, "completed")
    signed_off = list(data.signed_off_milestones)
    values = {
        "outcome": data.outcome,
        "notes": data.notes,
        "action_items": list(data.action_items),
        "signed_off_milestones": signed_off,
        "closed_at": now,
    }
    return await _end_session(
        session,
        row,
        COMPLETED,
        events.SESSION_COMPLETED,
        now,
        values,
        outcome=data.outcome,
        signed_off_milestones=signed_off,
    )


async def record_no_show(session: AsyncSession, row: Row[Any], *, data: NoShowIn, now: datetime) -> Row[Any]:
    _require_booked(row, "marked as a no-show")
    _require_started(row, now, "marked as a no-show")
    values = {"absent_party": data.absent_party, "notes": data.note, "closed_at": now}
    return await _end_session(session, row, NO_SHOW, events.SESSION_NO_SHOW, now, values)


# -- calendars ------------------------------------------------------------------------------------


async def _enterprise_names(session: AsyncSession, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = await session.execute(
        sa.select(enterprises.c.id, enterprises.c.name).where(enterprises.c.id.in_(wanted))
    )
    return {row.id: row.name for row in rows}


def _calendar_session(row: Row[Any], names: dict[uuid.UUID, str | None]) -> calendars.CalendarSession:
    return calendars.CalendarSession(
        id=row.id,
        sequence=row.sequence,
        status=row.status,
        start=row.starts_at,
        end=row.ends_at,
        timezone=row.timezone,
        topic=row.topic,
        milestone_code=row.milestone_code,
        enterprise_id=row.enterprise_id,
        enterprise_name=names.get(row.enterprise_id),
        updated_at=row.updated_at,
        cancel_reason=row.cancel_reason,
    )


def _calendar_mentor(mentor: Row[Any]) -> calendars.CalendarMentor:
    return calendars.CalendarMentor(id=mentor.id, name=mentor.name, email=mentor.email)


async def session_invitation(session: AsyncSession, row: Row[Any]) -> bytes:
    mentor = await load_mentor(session, row.mentor_id)
    assert mentor is not None
    names = await _enterprise_names(session, [row.enterprise_id])
    return calendars.invitation(_calendar_session(row, names), _calendar_mentor(mentor))


async def mentor_feed(
    session: AsyncSession, mentor: Row[Any], *, now: datetime, settings: MentoringSettings
) -> bytes:
    rows = (
        await session.execute(
            sa.select(sessions)
            .where(
                sessions.c.mentor_id == mentor.id,
                sessions.c.starts_at >= now - timedelta(days=settings.feed_past_days),
            )
            .order_by(sessions.c.starts_at, sessions.c.id)
            .limit(5000)
        )
    ).all()
    names = await _enterprise_names(session, [row.enterprise_id for row in rows])
    return calendars.feed(
        _calendar_mentor(mentor),
        [_calendar_session(row, names) for row in rows],
        refresh=timedelta(minutes=15),
    )


# -- recommendations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecommendationResult:
    enterprise_known: bool
    open_milestones: list[str]
    ranked: list[ranking.Ranked]
    mentors: dict[uuid.UUID, Row[Any]]


async def recommend_mentors(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    *,
    now: datetime,
    settings: MentoringSettings,
    limit: int,
) -> RecommendationResult:
    enterprise = (
        await session.execute(sa.select(enterprises).where(enterprises.c.id == enterprise_id))
    ).first()
    open_milestones = list(enterprise.open_milestones) if enterprise is not None else []
    rows = (await session.execute(sa.select(mentors).where(mentors.c.active.is_(True)))).all()
    mentees = await _active_mentees(session, None, now, settings)
    taken = await _taken(session, sa.select(mentors.c.id).where(mentors.c.active.is_(True)), now, now)
    candidates = []
    for row in rows:
        week_start, week_end = slots.local_week_bounds(now, ZoneInfo(row.timezone))
        this_week = sum(1 for t in taken.get(row.id, ()) if week_start <= t.start < week_end)
        candidates.append(
            ranking.Candidate(
                mentor_id=row.id,
                name=row.name,
                expertise=frozenset(row.expertise),
                active_mentees=len(mentees[row.id]),
                max_active_mentees=row.max_active_mentees,
                sessions_this_week=this_week,
                max_sessions_per_week=row.max_sessions_per_week,
                already_mentoring=enterprise_id in mentees[row.id],
            )
        )
    return RecommendationResult(
        enterprise_known=enterprise is not None,
        open_milestones=open_milestones,
        ranked=ranking.rank(open_milestones, candidates, limit),
        mentors={row.id: row for row in rows},
    )


# -- the enterprise read model --------------------------------------------------------------------


def _upsert(
    session: AsyncSession,
    values: dict[str, Any],
    update: Sequence[str],
    newer: Callable[[Any], sa.ColumnElement[bool]],
) -> sa.Executable:
    """Insert the enterprise, or update ``update`` columns only when ``newer(excluded)`` holds,
    so a stale or repeated event changes nothing, whichever replica applies it."""
    insert = postgresql_insert if _is_postgres(session) else sqlite_insert
    statement = insert(enterprises).values(values)
    return statement.on_conflict_do_update(
        index_elements=[enterprises.c.id],
        set_={key: statement.excluded[key] for key in update},
        where=newer(statement.excluded),
    )


async def record_enterprise(session: AsyncSession, snapshot: events.EnterpriseSnapshot) -> None:
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
    statement = _upsert(
        session,
        values,
        ["name", "stage", "profile_version", "updated_at"],
        lambda excluded: enterprises.c.profile_version < excluded.profile_version,
    )
    await session.execute(statement)


async def record_readiness(session: AsyncSession, readiness: events.ReadinessChanged) -> None:
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
    statement = _upsert(
        session,
        values,
        ["open_milestones", "ready", "readiness_score", "readiness_version", "updated_at"],
        lambda excluded: enterprises.c.readiness_version < excluded.readiness_version,
    )
    await session.execute(statement)
