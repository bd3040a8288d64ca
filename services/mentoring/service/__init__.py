"""Use cases of the mentoring service, one module per subject.

They take a session, change state and add outbox events; they never commit and never see
HTTP types. ``now`` is always an argument (the app's clock), so rules about notice and weeks
are the same in tests on fixed dates as in production.
"""

from services.mentoring.repository import load_mentor, load_session
from services.mentoring.service.availability import MentorSlot, mentor_slots, slots_of_mentors
from services.mentoring.service.booking import book_session, reschedule_session
from services.mentoring.service.calendars import (
    feed_token_valid,
    mentor_feed,
    revoke_calendar_token,
    rotate_calendar_token,
    session_invitation,
)
from services.mentoring.service.mentors import list_mentors, register_mentor, set_availability, update_mentor
from services.mentoring.service.recommendations import RecommendationResult, recommend_mentors
from services.mentoring.service.sessions import (
    cancel_session,
    complete_session,
    list_sessions,
    record_no_show,
)

__all__ = [
    "MentorSlot",
    "RecommendationResult",
    "book_session",
    "cancel_session",
    "complete_session",
    "feed_token_valid",
    "list_mentors",
    "list_sessions",
    "load_mentor",
    "load_session",
    "mentor_feed",
    "mentor_slots",
    "recommend_mentors",
    "record_no_show",
    "register_mentor",
    "reschedule_session",
    "revoke_calendar_token",
    "rotate_calendar_token",
    "session_invitation",
    "set_availability",
    "slots_of_mentors",
    "update_mentor",
]
