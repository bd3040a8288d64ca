"""Rows of the mentoring service as its HTTP representations."""

from __future__ import annotations

import uuid
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Row

from services.mentoring.api.dependencies import API
from services.mentoring.schemas import (
    AvailabilityOut,
    Cancellation,
    DateOverride,
    MentorOut,
    NoShow,
    Outcome,
    SessionOut,
    TimeWindow,
    WeeklyWindow,
)

# -- representations ----------------------------------------------------------------------------


def availability_out(mentor: Row[Any]) -> AvailabilityOut:
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


def mentor_out(mentor: Row[Any]) -> MentorOut:
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
        availability=availability_out(mentor),
        calendar_feed_enabled=mentor.calendar_token_hash is not None,
        created_at=mentor.created_at,
        updated_at=mentor.updated_at,
    )


def session_out(row: Row[Any] | dict[str, Any]) -> SessionOut:
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


def mentor_location(mentor_id: uuid.UUID) -> str:
    return f"{API}/mentors/{mentor_id}"
