"""Request and response models of the mentoring API (the HTTP contract)."""

from __future__ import annotations

import itertools
import re
import uuid
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from services.mentoring.vocabulary import AbsentParty, SessionStatus
from shared.http import FromRow, columns

# -- field types ----------------------------------------------------------------------------

# Times people see are RFC 3339 with the mentor's own UTC offset (+01:00 in summer, +00:00 in winter).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
"""Every time the service takes lies in [EARLIEST, LATEST): far from the ends of the calendar,
where a day or a buffer added to it would overflow."""


def within_horizon(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be from {EARLIEST:%Y-%m-%d} and before {LATEST:%Y-%m-%d}")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(within_horizon)]
LocalTime = Annotated[datetime, PlainSerializer(lambda value: value.isoformat(), return_type=str)]

_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Enough to catch mistakes; deliverability is the mail system's business.
_EMAIL = re.compile(
    r"^[^@\s<>\"(),;:]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _timezone(name: str) -> str:
    if name not in _zones():
        raise ValueError("must be an IANA time zone name, e.g. Europe/London")
    return name


def _clock_time(value: str) -> str:
    if value != "24:00" and not _CLOCK.match(value):
        raise ValueError("must be a local time HH:MM (00:00 to 24:00)")
    return value


def normalise_tag(value: str) -> str:
    """ "Social value", "social-value" and "social_value" are one tag: ``social_value``."""
    tag = re.sub(r"[\s\-]+", "_", value.strip().lower())
    if not _TAG.match(tag):
        raise ValueError("an expertise tag is letters, digits and underscores (at most 64)")
    return tag


def _tag(value: Any) -> Any:
    return normalise_tag(value) if isinstance(value, str) else value


def _email(value: str) -> str:
    if len(value) > 320 or not _EMAIL.match(value):
        raise ValueError("must be an email address, e.g. mentor@example.org")
    return value


def _code(value: str) -> str:
    if not _CODE.match(value):
        raise ValueError("a milestone code is lower-case letters, digits and underscores, e.g. legal_entity")
    return value


TimeZoneName = Annotated[str, AfterValidator(_timezone)]
ClockTime = Annotated[str, AfterValidator(_clock_time)]
ExpertiseTag = Annotated[str, BeforeValidator(_tag)]
MilestoneCode = Annotated[str, AfterValidator(_code)]
Email = Annotated[str, AfterValidator(_email)]
Text = Annotated[str, Field(min_length=1, max_length=4000)]


def clock_minutes(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


class Body(BaseModel):
    """Request bodies refuse unknown fields, so a misspelt field is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


# -- availability ---------------------------------------------------------------------------


class TimeWindow(Body):
    start: ClockTime = Field(examples=["09:00"])
    end: ClockTime = Field(examples=["17:00"], description="After start; 24:00 is the end of the day.")

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if clock_minutes(self.end) <= clock_minutes(self.start):
            raise ValueError("end must be after start")
        return self


class WeeklyWindow(TimeWindow):
    weekday: int = Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday")


class DateOverride(Body):
    date: date
    windows: list[TimeWindow] = Field(
        default_factory=list, max_length=24, description="The hours of that date instead; empty: a day off."
    )


def _overlaps(windows: list[tuple[int, int, str]]) -> list[dict[str, str]]:
    errors = []
    ordered = sorted(windows)
    for (_, end, name), (next_start, _, next_name) in itertools.pairwise(ordered):
        if next_start < end:
            errors.append({"field": next_name, "message": f"overlaps {name}"})
    return errors


class AvailabilityIn(Body):
    """A mentor's availability rules, in the mentor's IANA time zone."""

    timezone: TimeZoneName | None = Field(None, description="Defaults to the mentor's time zone.")
    weekly: list[WeeklyWindow] = Field(default_factory=list, max_length=100)
    overrides: list[DateOverride] = Field(default_factory=list, max_length=1000)
    buffer_before_minutes: int = Field(0, ge=0, le=480)
    buffer_after_minutes: int = Field(0, ge=0, le=480)
    minimum_notice_minutes: int = Field(60, ge=0, le=60 * 24 * 90)
    cancellation_notice_minutes: int = Field(0, ge=0, le=60 * 24 * 30)
    slot_interval_minutes: int = Field(30, ge=5, le=480)
    booking_horizon_days: int = Field(180, ge=1, le=730)
    max_sessions_per_day: int | None = Field(None, ge=1, le=100)

    def problems(self, prefix: str = "") -> list[dict[str, str]]:
        """Overlapping windows and repeated dates, each named (``weekly.3``, ``overrides.0.date``)."""
        errors: list[dict[str, str]] = []
        for weekday in range(7):
            errors += _overlaps(
                [
                    (clock_minutes(w.start), clock_minutes(w.end), f"{prefix}weekly.{i}")
                    for i, w in enumerate(self.weekly)
                    if w.weekday == weekday
                ]
            )
        seen: dict[date, int] = {}
        for i, override in enumerate(self.overrides):
            if override.date in seen:
                errors.append(
                    {
                        "field": f"{prefix}overrides.{i}.date",
                        "message": f"repeats overrides.{seen[override.date]}",
                    }
                )
            seen.setdefault(override.date, i)
            errors += _overlaps(
                [
                    (clock_minutes(w.start), clock_minutes(w.end), f"{prefix}overrides.{i}.windows.{j}")
                    for j, w in enumerate(override.windows)
                ]
            )
        return errors


class AvailabilityOut(FromRow):
    timezone: str
    weekly: list[WeeklyWindow] = Field(validation_alias="weekly_windows")
    overrides: list[DateOverride] = Field(validation_alias="date_overrides")
    buffer_before_minutes: int
    buffer_after_minutes: int
    minimum_notice_minutes: int
    cancellation_notice_minutes: int
    slot_interval_minutes: int
    booking_horizon_days: int
    max_sessions_per_day: int | None


# -- mentors --------------------------------------------------------------------------------

SessionLength = Annotated[int, Field(ge=5, le=480, multiple_of=5)]


class MentorIn(Body):
    name: str = Field(min_length=1, max_length=200)
    email: Email = Field(description="The organiser address of the mentor's calendar invitations.")
    organisation: str | None = Field(None, max_length=200)
    anchor_id: uuid.UUID | None = Field(None, description="When the mentor is an anchor's own staff.")
    bio: str | None = Field(None, max_length=4000)
    expertise: list[ExpertiseTag] = Field(
        default_factory=list,
        max_length=50,
        description="Tags, including the milestone categories legal, insurance, policy, accreditation, "
        "financial, social_value, bidding, digital.",
    )
    timezone: TimeZoneName = Field(examples=["Europe/London"])
    session_lengths_minutes: list[SessionLength] = Field(
        default_factory=lambda: [30, 60], min_length=1, max_length=12
    )
    max_active_mentees: int | None = Field(None, ge=1, le=1000)
    max_sessions_per_week: int | None = Field(None, ge=1, le=500)
    availability: AvailabilityIn | None = Field(None, description="Optional: the availability rules at once.")

    @model_validator(mode="after")
    def _normalise(self) -> MentorIn:
        self.expertise = _unique(self.expertise)
        self.session_lengths_minutes = sorted(set(self.session_lengths_minutes))
        return self


class MentorPatch(Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    email: Email | None = None
    organisation: str | None = Field(None, max_length=200)
    anchor_id: uuid.UUID | None = None
    bio: str | None = Field(None, max_length=4000)
    expertise: list[ExpertiseTag] | None = Field(None, max_length=50)
    timezone: TimeZoneName | None = None
    session_lengths_minutes: list[SessionLength] | None = Field(None, min_length=1, max_length=12)
    max_active_mentees: int | None = Field(None, ge=1, le=1000)
    max_sessions_per_week: int | None = Field(None, ge=1, le=500)
    active: bool | None = None

    @model_validator(mode="after")
    def _not_null(self) -> MentorPatch:
        for name in ("name", "email", "expertise", "timezone", "session_lengths_minutes", "active"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        if self.expertise is not None:
            self.expertise = _unique(self.expertise)
        if self.session_lengths_minutes is not None:
            self.session_lengths_minutes = sorted(set(self.session_lengths_minutes))
        return self


class MentorOut(FromRow):
    id: uuid.UUID
    version: int
    name: str
    email: str
    organisation: str | None
    anchor_id: uuid.UUID | None
    bio: str | None
    expertise: list[str]
    timezone: str
    session_lengths_minutes: list[int] = Field(validation_alias="session_lengths")
    max_active_mentees: int | None
    max_sessions_per_week: int | None
    active: bool
    availability: AvailabilityOut
    calendar_feed_enabled: bool
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _from_mentor_row(cls, row: Any) -> Any:
        fields = columns(row)
        if "calendar_token_hash" not in fields:
            return fields  # already the answer's fields
        # The same row holds the availability; of the feed's secret only whether there is one shows.
        return {
            **fields,
            "availability": fields,
            "calendar_feed_enabled": fields["calendar_token_hash"] is not None,
        }


class MentorPage(BaseModel):
    items: list[MentorOut]
    next_cursor: str | None = None


class CalendarTokenOut(BaseModel):
    mentor_id: uuid.UUID
    token: str = Field(description="Shown only here; it is stored hashed.")
    feed_path: str = Field(description="The feed URL path on the gateway, token included.")
    rotated_at: datetime


# -- slots ----------------------------------------------------------------------------------


class SlotOut(BaseModel):
    start: LocalTime
    end: LocalTime


class MentorSlots(BaseModel):
    mentor_id: uuid.UUID
    timezone: str
    duration_minutes: int
    items: list[SlotOut]


class MentorSlotOut(SlotOut):
    mentor_id: uuid.UUID
    timezone: str


class SlotPage(BaseModel):
    items: list[MentorSlotOut]
    next_cursor: str | None = None


# -- sessions -------------------------------------------------------------------------------


class SessionIn(Body):
    mentor_id: uuid.UUID
    enterprise_id: uuid.UUID
    start: Instant = Field(description="RFC 3339 with an offset; one of the mentor's free slots.")
    duration_minutes: int = Field(ge=5, le=480)
    topic: str = Field(min_length=1, max_length=500)
    milestone_code: MilestoneCode | None = None


class RescheduleIn(Body):
    start: Instant
    duration_minutes: int | None = Field(None, ge=5, le=480, description="Defaults to the current length.")
    reason: str | None = Field(None, max_length=1000)


class CancelIn(Body):
    reason: str = Field(min_length=1, max_length=1000)


class CompleteIn(Body):
    outcome: Text
    notes: str | None = Field(None, max_length=20000)
    action_items: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        default_factory=list, max_length=50
    )
    signed_off_milestones: list[MilestoneCode] = Field(
        default_factory=list, max_length=50, description="Milestone codes the mentor signs off."
    )

    @model_validator(mode="after")
    def _normalise(self) -> CompleteIn:
        self.signed_off_milestones = _unique(self.signed_off_milestones)
        return self


class NoShowIn(Body):
    absent_party: AbsentParty = "enterprise"
    note: str | None = Field(None, max_length=4000)


# A list column a row may hold as null: read as empty.
StoredList = Annotated[list[str], BeforeValidator(lambda values: values or [])]


class Cancellation(FromRow):
    reason: str = Field(validation_alias="cancel_reason")
    cancelled_at: datetime
    cancelled_by_role: str


class Outcome(FromRow):
    outcome: str
    notes: str | None
    action_items: StoredList
    signed_off_milestones: StoredList
    completed_at: datetime = Field(validation_alias="closed_at")


class NoShow(FromRow):
    absent_party: str
    note: str | None = Field(validation_alias="notes")
    recorded_at: datetime = Field(validation_alias="closed_at")


class SessionOut(FromRow):
    id: uuid.UUID
    mentor_id: uuid.UUID
    enterprise_id: uuid.UUID
    start: LocalTime
    end: LocalTime
    timezone: str
    duration_minutes: int
    topic: str
    milestone_code: str | None
    status: SessionStatus
    sequence: int
    booked_by_role: str
    reschedule_reason: str | None = None
    cancellation: Cancellation | None
    outcome: Outcome | None
    no_show: NoShow | None
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _from_session_row(cls, row: Any) -> Any:
        fields = columns(row)
        if "starts_at" not in fields:
            return fields  # already the answer's fields
        # Times in the session's own zone; the closing record that the status names, nested.
        zone = ZoneInfo(fields["timezone"])
        status = fields["status"]
        return {
            **fields,
            "start": fields["starts_at"].astimezone(zone),
            "end": fields["ends_at"].astimezone(zone),
            "cancellation": fields if status == "cancelled" else None,
            "outcome": fields if status == "completed" else None,
            "no_show": fields if status == "no_show" else None,
        }


class SessionPage(BaseModel):
    items: list[SessionOut]
    next_cursor: str | None = None


# -- recommendations ------------------------------------------------------------------------


class Recommendation(BaseModel):
    mentor_id: uuid.UUID
    name: str
    organisation: str | None
    expertise: list[str]
    timezone: str
    score: float = Field(description="0..1: mostly coverage of the open milestones, then capacity.")
    covered_milestones: list[str]
    coverage: float
    already_mentoring: bool
    active_mentees: int
    max_active_mentees: int | None
    sessions_left_this_week: int | None


class Recommendations(BaseModel):
    enterprise_id: uuid.UUID
    enterprise_known: bool = Field(description="False until the enterprises events about it have arrived.")
    open_milestones: list[str]
    items: list[Recommendation]
