"""The mentoring service's shared queries: mentors and sessions read by several subjects, and
the locks that serialise the bookings of one mentor or one enterprise."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import slots
from services.mentoring.models import MAX_BLOCKED_SPAN, mentors, sessions
from services.mentoring.settings import MentoringSettings
from services.mentoring.vocabulary import BOOKED, COUNTED_STATUSES
from shared.db import is_postgres
from shared.pagination import CursorFormat, Keyset

# Sessions of a mentor within this much of a range decide its day and week counts
# (its local day and buffers only, when the mentor has no weekly limit).
WEEK_MARGIN = timedelta(days=8)

NEAR_MARGIN = timedelta(days=2)


# PostgreSQL: the mentor's row, and the mentor's and the enterprise's advisory locks, in one
# round trip. Every booking and reschedule takes them in this order (a select list is evaluated
# left to right), so they never deadlock on each other. Advisory locks, not a lock of the
# mentor's row: a row lock writes the row.
_MENTOR_WITH_LOCKS = sa.select(
    mentors,
    sa.func.pg_advisory_xact_lock(sa.bindparam("mentor_key", type_=sa.BigInteger)),
    sa.func.pg_advisory_xact_lock(sa.bindparam("enterprise_key", type_=sa.BigInteger)),
).where(mentors.c.id == sa.bindparam("mentor_id"))
_MENTOR = sa.select(mentors).where(mentors.c.id == sa.bindparam("mentor_id"))
_MENTOR_LOCKED = _MENTOR.with_for_update(key_share=True)


def _advisory_key(party_id: uuid.UUID) -> int:
    """A mentor's or an enterprise's advisory lock: 64 bits of its (random) id."""
    return int.from_bytes(party_id.bytes[:8], "big", signed=True)


async def load_mentor(session: AsyncSession, mentor_id: uuid.UUID, *, lock: bool = False) -> Row[Any] | None:
    """A mentor, or None; ``lock`` holds its row until the commit (PostgreSQL; SQLite's
    write transactions already hold the database lock). FOR NO KEY UPDATE: changes of a mentor
    take turns (the ETag is checked under it); foreign keys to the mentor still pass."""
    return (await session.execute(_MENTOR_LOCKED if lock else _MENTOR, {"mentor_id": mentor_id})).first()


async def lock_for_booking(
    session: AsyncSession, mentor_id: uuid.UUID, enterprise_id: uuid.UUID
) -> Row[Any] | None:
    """The mentor, with their bookings and the enterprise's locked until the commit.

    On PostgreSQL two bookings of one mentor, or of one enterprise, take turns here (advisory
    locks of the transaction, one for the mentor and one for the enterprise), so the
    checks that follow see every committed session and the exclusion constraints are a last
    guard rather than a race (two transactions inserting conflicting rows at the same moment
    would each wait for the other on the constraint: a deadlock). On SQLite the write
    transaction already holds the database lock (BEGIN IMMEDIATE)."""
    if not is_postgres(session):
        return await load_mentor(session, mentor_id)
    keys = {"mentor_key": _advisory_key(mentor_id), "enterprise_key": _advisory_key(enterprise_id)}
    return (await session.execute(_MENTOR_WITH_LOCKS, {"mentor_id": mentor_id, **keys})).first()


MENTOR_ORDER = Keyset(mentors.c.created_at, mentors.c.id)
SESSION_ORDER = Keyset(sessions.c.starts_at, sessions.c.id)
SLOT_CURSOR = CursorFormat(datetime, uuid.UUID)
"""A page of free slots ends at a (start, mentor id)."""


def occupying(low: Any, high: Any, *, starts_after: Any = None, starts_before: Any = None) -> list[Any]:
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


async def taken_by_mentor(
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
        *occupying(start - WEEK_MARGIN, end + WEEK_MARGIN),
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


async def load_session(
    session: AsyncSession, session_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    query = sa.select(sessions).where(sessions.c.id == session_id)
    if lock:
        query = query.with_for_update(key_share=True)
    return (await session.execute(query)).first()


async def reload_session(session: AsyncSession, session_id: uuid.UUID) -> Row[Any]:
    row = await load_session(session, session_id)
    assert row is not None
    return row


async def active_mentees(
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


# The columns of a session near a booking.
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


def _sessions_near_statement(*, excluding: bool) -> sa.Select[Any]:
    mentors_own = sa.and_(
        sessions.c.mentor_id == sa.bindparam("mentor_id"),
        # The statuses written into the statement (constants): it is compiled once.
        sessions.c.status.in_([sa.literal_column(f"'{status}'") for status in COUNTED_STATUSES]),
        *occupying(
            sa.bindparam("low"),
            sa.bindparam("high"),
            starts_after=sa.bindparam("starts_after"),
            starts_before=sa.bindparam("starts_before"),
        ),
    )
    enterprises_own = sa.and_(
        sessions.c.enterprise_id == sa.bindparam("enterprise_id"),
        sessions.c.status == BOOKED,
        sessions.c.starts_at < sa.bindparam("end"),
        sessions.c.ends_at > sa.bindparam("start"),
        # A session is shorter than MAX_BLOCKED_SPAN: read a range of (enterprise_id, starts_at).
        sessions.c.starts_at > sa.bindparam("enterprise_starts_after"),
    )
    query = sa.select(*_NEAR_COLUMNS).where(sa.or_(mentors_own, enterprises_own))
    return query.where(sessions.c.id != sa.bindparam("excluding")) if excluding else query


_SESSIONS_NEAR = _sessions_near_statement(excluding=False)
_SESSIONS_NEAR_EXCLUDING = _sessions_near_statement(excluding=True)


def sessions_near(
    mentor_id: uuid.UUID,
    enterprise_id: uuid.UUID,
    start: datetime,
    end: datetime,
    margin: timedelta,
    *,
    excluding: uuid.UUID | None,
) -> tuple[sa.Select[Any], dict[str, Any]]:
    """In one query: the mentor's sessions that matter to a new one at ``[start, end)`` (those
    its buffers could touch, and within ``margin`` for its day and week limits), and the
    enterprise's booked sessions overlapping it; the statement and its parameters."""
    params: dict[str, Any] = {
        "mentor_id": mentor_id,
        "enterprise_id": enterprise_id,
        "low": start - margin,
        "high": end + margin,
        "starts_after": start - margin - MAX_BLOCKED_SPAN,
        "starts_before": end + margin + MAX_BLOCKED_SPAN,
        "start": start,
        "end": end,
        "enterprise_starts_after": start - MAX_BLOCKED_SPAN,
    }
    if excluding is None:
        return _SESSIONS_NEAR, params
    return _SESSIONS_NEAR_EXCLUDING, params | {"excluding": excluding}
