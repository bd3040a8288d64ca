"""iCalendar (RFC 5545 / iTIP RFC 5546) for sessions: invitations and a mentor's feed.

An invitation is ``METHOD:REQUEST`` with a UID that never changes for the session
and its ``SEQUENCE``; a cancelled session is ``METHOD:CANCEL`` with the higher
sequence the cancellation gave it, so calendar apps replace or remove the event
they already hold. Times carry the mentor's ``TZID`` and its ``VTIMEZONE``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, vCalAddress, vText

PRODID = "-//Seedbed//Mentoring//EN"
UID_DOMAIN = "mentoring.seedbed"
CONTENT_TYPE = "text/calendar; charset=utf-8"


@dataclass(frozen=True)
class CalendarSession:
    """What a calendar entry shows of a session."""

    id: uuid.UUID
    sequence: int
    status: str
    start: datetime
    end: datetime
    timezone: str
    topic: str
    milestone_code: str | None
    enterprise_id: uuid.UUID
    enterprise_name: str | None
    updated_at: datetime
    cancel_reason: str | None = None


@dataclass(frozen=True)
class CalendarMentor:
    id: uuid.UUID
    name: str
    email: str


def session_uid(session_id: uuid.UUID) -> str:
    """The UID of a session's calendar event: the same for its whole life, reschedules included."""
    return f"{session_id}@{UID_DOMAIN}"


def _calendar(method: str | None) -> Calendar:
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    if method:
        calendar.add("method", method)
    return calendar


def _repeated(local: datetime) -> bool:
    """True when the wall-clock time happens twice (the hour the clocks go back)."""
    return local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()


def _event(session: CalendarSession, mentor: CalendarMentor) -> Event:
    zone = ZoneInfo(session.timezone)
    event = Event()
    event.add("uid", session_uid(session.id))
    event.add("sequence", session.sequence)
    event.add("dtstamp", session.updated_at)
    event.add("last-modified", session.updated_at)
    start, end = session.start.astimezone(zone), session.end.astimezone(zone)
    if _repeated(start) or _repeated(end):
        # A TZID time in the repeated hour means its first occurrence (RFC 5545 3.3.5): say it in UTC.
        start, end = session.start.astimezone(UTC), session.end.astimezone(UTC)
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("summary", f"Mentoring: {session.topic}")
    lines = [f"Mentoring session with {mentor.name}.", f"Topic: {session.topic}"]
    if session.milestone_code:
        lines.append(f"Milestone: {session.milestone_code}")
    if session.status == "cancelled" and session.cancel_reason:
        lines.append(f"Cancelled: {session.cancel_reason}")
    event.add("description", "\n".join(lines))
    event.add("status", "CANCELLED" if session.status == "cancelled" else "CONFIRMED")
    event.add("transp", "TRANSPARENT" if session.status == "cancelled" else "OPAQUE")
    organizer = vCalAddress(f"mailto:{mentor.email}")
    organizer.params["cn"] = vText(mentor.name)
    event.add("organizer", organizer)
    # Enterprises have no address here; a URN names the participant without inventing one.
    attendee = vCalAddress(f"urn:uuid:{session.enterprise_id}")
    attendee.params["cn"] = vText(session.enterprise_name or "Enterprise")
    attendee.params["role"] = vText("REQ-PARTICIPANT")
    attendee.params["cutype"] = vText("GROUP")
    event.add("attendee", attendee)
    if session.milestone_code:
        event.add("categories", [session.milestone_code])
    return event


def _with_timezones(calendar: Calendar, sessions: list[CalendarSession]) -> bytes:
    if sessions:
        # VTIMEZONE rules for the years the events span, not every transition since 1970.
        first = min(s.start for s in sessions).date() - timedelta(days=366)
        last = max(s.end for s in sessions).date() + timedelta(days=366)
        calendar.add_missing_timezones(first_date=first, last_date=last)
    return calendar.to_ical()


def invitation(session: CalendarSession, mentor: CalendarMentor) -> bytes:
    """The .ics of one session: REQUEST while it stands, CANCEL once cancelled."""
    calendar = _calendar("CANCEL" if session.status == "cancelled" else "REQUEST")
    calendar.add_component(_event(session, mentor))
    return _with_timezones(calendar, [session])


def method_of(session_status: str) -> str:
    return "CANCEL" if session_status == "cancelled" else "REQUEST"


def feed(mentor: CalendarMentor, sessions: Iterable[CalendarSession], refresh: timedelta) -> bytes:
    """A mentor's subscribable feed: every session in the window, cancelled ones marked so."""
    calendar = _calendar("PUBLISH")
    calendar.add("x-wr-calname", f"Seedbed mentoring: {mentor.name}")
    calendar.add("refresh-interval", refresh, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", refresh)
    listed = list(sessions)
    for session in listed:
        calendar.add_component(_event(session, mentor))
    return _with_timezones(calendar, listed)
