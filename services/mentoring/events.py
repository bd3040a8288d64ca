"""Events the mentoring service publishes (payload models) and handlers of those it consumes.

Published on the ``MENTORING`` stream; payloads per docs/EVENTS.md. Consumed:
``mentoring-enterprises`` keeps a read model of the enterprises and their open
milestones (``enterprises.enterprise.>``, ``enterprises.readiness.changed.v1``).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from shared.asyncapi import EventSpec
from shared.events import event_source, event_type

SERVICE = "mentoring"
SOURCE = event_source(SERVICE)

MENTOR_REGISTERED = event_type(SERVICE, "mentor", "registered")
MENTOR_UPDATED = event_type(SERVICE, "mentor", "updated")
AVAILABILITY_CHANGED = event_type(SERVICE, "availability", "changed")
SESSION_BOOKED = event_type(SERVICE, "session", "booked")
SESSION_RESCHEDULED = event_type(SERVICE, "session", "rescheduled")
SESSION_CANCELLED = event_type(SERVICE, "session", "cancelled")
SESSION_COMPLETED = event_type(SERVICE, "session", "completed")
SESSION_NO_SHOW = event_type(SERVICE, "session", "no_show")
SESSION_REMINDER_DUE = event_type(SERVICE, "session", "reminder_due")


# -- published --------------------------------------------------------------------------------


class MentorPayload(BaseModel):
    """The mentor as other services need it; ``version`` grows with every change of the mentor."""

    mentor_id: uuid.UUID
    version: int
    name: str
    organisation: str | None
    expertise: list[str]
    timezone: str


class SessionPayload(BaseModel):
    """A session; ``sequence`` grows with every change (it is also the iCalendar SEQUENCE)."""

    session_id: uuid.UUID
    sequence: int
    mentor_id: uuid.UUID
    enterprise_id: uuid.UUID
    start: datetime  # UTC
    end: datetime  # UTC
    timezone: str  # the mentor's, to show local time
    topic: str
    status: str
    milestone_code: str | None


class SessionCancelledPayload(SessionPayload):
    reason: str


class SessionCompletedPayload(SessionPayload):
    outcome: str
    signed_off_milestones: list[str]


class SessionReminderPayload(SessionPayload):
    remind_before_minutes: int


PUBLISHED: list[EventSpec] = [
    EventSpec(MENTOR_REGISTERED, MentorPayload, "A mentor was registered."),
    EventSpec(MENTOR_UPDATED, MentorPayload, "A mentor's profile changed (name, expertise, zone...)."),
    EventSpec(AVAILABILITY_CHANGED, MentorPayload, "A mentor's availability rules changed."),
    EventSpec(SESSION_BOOKED, SessionPayload, "A mentoring session was booked."),
    EventSpec(SESSION_RESCHEDULED, SessionPayload, "A session moved (same id, higher sequence)."),
    EventSpec(SESSION_CANCELLED, SessionCancelledPayload, "A session was cancelled, with the reason."),
    EventSpec(
        SESSION_COMPLETED,
        SessionCompletedPayload,
        "A session was completed; carries the milestone codes the mentor signed off.",
    ),
    EventSpec(SESSION_NO_SHOW, SessionPayload, "A session did not take place: a party did not come."),
    EventSpec(
        SESSION_REMINDER_DUE,
        SessionReminderPayload,
        "A booked session starts in remind_before_minutes (sent once per reminder).",
    ),
]
