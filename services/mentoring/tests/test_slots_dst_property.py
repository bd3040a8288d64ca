"""Across both clock changes of the year, in any IANA zone: a slot's end, and a booked session's,
is its start plus its length as instants (never the wall-clock sum in the mentor's zone)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.mentoring.slots import slot_end
from services.mentoring.tests.helpers import Clock, book, create_mentor

YEAR = 2027


def _offset_on(zone: ZoneInfo, day: date) -> timedelta | None:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC).astimezone(zone).utcoffset()


@lru_cache(maxsize=1)
def _zones_with_two_changes() -> dict[str, tuple[date, date]]:
    """Zones whose offset changes exactly twice in the year, with the local dates of the changes."""
    out: dict[str, tuple[date, date]] = {}
    first = date(YEAR, 1, 1)
    for name in sorted(available_timezones()):
        try:
            zone = ZoneInfo(name)
        except (ValueError, OSError):
            continue
        changes = []
        previous = _offset_on(zone, first)
        for n in range(1, 365):
            day = first + timedelta(days=n)
            offset = _offset_on(zone, day)
            if offset != previous:
                changes.append(day)  # the change happened since noon of the day before
            previous = offset
        if len(changes) == 2:
            out[name] = (changes[0], changes[1])
    return out


def test_there_are_zones_with_both_changes_to_draw_from() -> None:
    zones = _zones_with_two_changes()
    assert "Europe/London" in zones and "Australia/Sydney" in zones and "Australia/Lord_Howe" in zones
    assert zones["Europe/London"] == (date(2027, 3, 28), date(2027, 10, 31))


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, object]:
    zones = _zones_with_two_changes()
    name = draw(st.sampled_from(sorted(zones)))
    change = draw(st.sampled_from(zones[name]))
    length = draw(st.sampled_from([15, 30, 45, 60, 90, 120]))
    start_minute = draw(st.integers(0, 24 * 60 - length).map(lambda m: m - m % 15))
    end_minute = draw(
        st.integers(start_minute + length, 24 * 60).map(lambda m: min(24 * 60, m - m % 15 + 15))
    )
    interval = draw(st.sampled_from([15, 30, 60]))
    return {
        "zone": name,
        "change": change,
        "window": (start_minute, end_minute),
        "length": length,
        "interval": interval,
    }


def _clock_text(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
async def test_every_slot_and_booking_ends_its_length_after_its_start_across_clock_changes(
    staff: httpx.AsyncClient, clock: Clock, case: dict[str, object]
) -> None:
    clock.now = datetime(YEAR - 1, 12, 20, tzinfo=UTC)
    zone, change = str(case["zone"]), case["change"]
    assert isinstance(change, date)
    start_minute, end_minute = case["window"]  # type: ignore[misc]
    length = int(case["length"])  # type: ignore[call-overload]
    mentor = await create_mentor(
        staff,
        email=f"m{uuid.uuid4().hex[:8]}@example.org",
        timezone=zone,
        session_lengths_minutes=[length],
        availability={
            "weekly": [
                {"weekday": day, "start": _clock_text(start_minute), "end": _clock_text(end_minute)}
                for day in range(7)
            ],
            "slot_interval_minutes": case["interval"],
            "booking_horizon_days": 730,
        },
    )
    response = await staff.get(
        f"/api/v1/mentors/{mentor['id']}/slots",
        params={
            "start": (change - timedelta(days=2)).isoformat(),
            "end": (change + timedelta(days=2)).isoformat(),
            "duration_minutes": length,
        },
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert items, f"no slots in {zone} around {change}"
    offsets = set()
    for item in items:
        start, end = _instant(item["start"]), _instant(item["end"])
        assert end - start == timedelta(minutes=length), item
        assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(minutes=length), item
        # Each is shown with the offset the mentor's zone has at that instant.
        assert start.utcoffset() == start.astimezone(ZoneInfo(zone)).utcoffset(), item
        assert end.utcoffset() == end.astimezone(ZoneInfo(zone)).utcoffset(), item
        offsets.add(start.utcoffset())
    # The slots a mentor offers can be booked, and the session keeps the same length.
    chosen = items[len(items) // 2]
    booked = await book(staff, mentor["id"], uuid.uuid4(), _instant(chosen["start"]), length)
    assert booked.status_code == 201, booked.text
    session = booked.json()
    assert _instant(session["end"]) - _instant(session["start"]) == timedelta(minutes=length)
    assert (session["start"], session["end"]) == (chosen["start"], chosen["end"])


def test_slot_end_adds_the_length_as_instants_over_the_autumn_change_in_london() -> None:
    start = datetime(2027, 10, 31, 1, 30, tzinfo=ZoneInfo("Europe/London"))  # BST, fold 0
    end = slot_end(start, timedelta(minutes=60))
    assert end.isoformat() == "2027-10-31T01:30:00+00:00"
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(minutes=60)
