"""Free slots, as pure logic: local wall-clock rules across the 2027 Europe/London clock changes,
overrides, buffers, notice, horizon and limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.mentoring.slots import (
    Occupancy,
    Refusal,
    Rules,
    Taken,
    Window,
    check_slot,
    free_slots,
    local_week_bounds,
    wall_clock_instant,
)
from services.mentoring.tests.helpers import LONDON, london

HOUR = timedelta(hours=1)
NINE_TO_FIVE = {day: (Window(9 * 60, 17 * 60),) for day in range(5)}
EARLY = datetime(2027, 1, 1, tzinfo=UTC)  # "now", long before every date below


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def rules(**overrides: object) -> Rules:
    values: dict[str, object] = {"timezone": LONDON, "weekly": NINE_TO_FIVE}
    values.update(overrides)
    return Rules(**values)  # type: ignore[arg-type]


def local(instants: list[datetime]) -> list[str]:
    return [instant.astimezone(LONDON).isoformat() for instant in instants]


def session(
    start: datetime, minutes: int = 60, *, before: int = 0, after: int = 0, blocks: bool = True
) -> Taken:
    end = start + timedelta(minutes=minutes)
    return Taken(
        start=start,
        blocked_from=start - timedelta(minutes=before),
        blocked_until=end + timedelta(minutes=after),
        blocks=blocks,
        ref=start.isoformat(),
    )


# -- clock changes --------------------------------------------------------------------------------


def test_nine_to_five_is_nine_to_five_local_on_both_sides_of_the_spring_change() -> None:
    found = free_slots(rules(), HOUR, london(2027, 3, 26, 0), london(2027, 3, 30, 0), EARLY)
    friday = [s for s in found if s.astimezone(LONDON).date() == date(2027, 3, 26)]
    monday = [s for s in found if s.astimezone(LONDON).date() == date(2027, 3, 29)]
    assert local([friday[0], friday[-1]]) == ["2027-03-26T09:00:00+00:00", "2027-03-26T16:00:00+00:00"]
    assert local([monday[0], monday[-1]]) == ["2027-03-29T09:00:00+01:00", "2027-03-29T16:00:00+01:00"]
    assert friday[0] == utc(2027, 3, 26, 9) and monday[0] == utc(2027, 3, 29, 8)
    assert len(friday) == len(monday) == 15  # every half hour from 09:00 to 16:00
    assert len(found) == 30  # nothing at the weekend


def test_nine_to_five_is_nine_to_five_local_on_both_sides_of_the_autumn_change() -> None:
    found = free_slots(rules(), HOUR, london(2027, 10, 29, 0), london(2027, 11, 2, 0), EARLY)
    assert local([found[0], found[14], found[15], found[-1]]) == [
        "2027-10-29T09:00:00+01:00",
        "2027-10-29T16:00:00+01:00",
        "2027-11-01T09:00:00+00:00",
        "2027-11-01T16:00:00+00:00",
    ]
    assert found[0] == utc(2027, 10, 29, 8) and found[15] == utc(2027, 11, 1, 9)


def test_a_window_across_the_skipped_hour_offers_only_times_that_exist() -> None:
    # Sunday 28 March 2027: the clocks go from 01:00 GMT to 02:00 BST.
    sunday = rules(weekly={6: (Window(0, 4 * 60),)})
    found = free_slots(sunday, HOUR, london(2027, 3, 28, 0), london(2027, 3, 29, 0), EARLY)
    assert local(found) == [
        "2027-03-28T00:00:00+00:00",
        "2027-03-28T00:30:00+00:00",
        "2027-03-28T02:00:00+01:00",  # 01:00 and 01:30 never happen that night
        "2027-03-28T02:30:00+01:00",
        "2027-03-28T03:00:00+01:00",  # ends at 04:00 BST: the window is three real hours long
    ]
    # An hour-long session may run across the jump: 00:30 GMT to 02:30 BST is one real hour.
    assert found[1] + HOUR == utc(2027, 3, 28, 1, 30)


def test_a_window_opening_inside_the_skipped_hour_opens_when_the_clock_jumps() -> None:
    sunday = rules(weekly={6: (Window(90, 3 * 60),)})  # 01:30-03:00, and 01:30 does not exist
    found = free_slots(sunday, timedelta(minutes=30), london(2027, 3, 28, 0), london(2027, 3, 29, 0), EARLY)
    assert local(found) == ["2027-03-28T02:00:00+01:00", "2027-03-28T02:30:00+01:00"]


def test_a_window_entirely_inside_the_skipped_hour_offers_nothing() -> None:
    sunday = rules(weekly={6: (Window(70, 110),)})  # 01:10-01:50 local never happens
    assert (
        free_slots(sunday, timedelta(minutes=30), london(2027, 3, 28, 0), london(2027, 3, 29, 0), EARLY) == []
    )


def test_a_window_across_the_repeated_hour_offers_both_occurrences_with_their_offsets() -> None:
    # Sunday 31 October 2027: 02:00 BST becomes 01:00 GMT, so 01:00-02:00 happens twice.
    sunday = rules(weekly={6: (Window(0, 3 * 60),)})
    found = free_slots(sunday, HOUR, london(2027, 10, 31, 0), london(2027, 11, 1, 0), EARLY)
    assert local(found) == [
        "2027-10-31T00:00:00+01:00",
        "2027-10-31T00:30:00+01:00",
        "2027-10-31T01:00:00+01:00",
        "2027-10-31T01:30:00+01:00",
        "2027-10-31T01:00:00+00:00",
        "2027-10-31T01:30:00+00:00",
        "2027-10-31T02:00:00+00:00",  # ends 03:00 GMT: the window is four real hours long
    ]
    assert found[0] == utc(2027, 10, 30, 23)
    assert found == sorted(found) and len(set(found)) == len(found)


def test_a_window_ending_in_the_repeated_hour_closes_at_its_second_occurrence() -> None:
    sunday = rules(weekly={6: (Window(0, 90),)})  # 00:00-01:30: the clock shows 01:30 twice
    found = free_slots(sunday, timedelta(minutes=30), london(2027, 10, 31, 0), london(2027, 11, 1, 0), EARLY)
    assert found[0] == utc(2027, 10, 30, 23)
    assert found[-1] + timedelta(minutes=30) == utc(2027, 10, 31, 1, 30)  # 01:30 GMT
    assert len(found) == 5


def test_wall_clock_instants_around_the_changes() -> None:
    spring, autumn = date(2027, 3, 28), date(2027, 10, 31)
    assert wall_clock_instant(spring, 90, LONDON) == utc(2027, 3, 28, 1)  # skipped: the jump
    assert wall_clock_instant(spring, 90, LONDON, closing=True) == utc(2027, 3, 28, 1)
    assert wall_clock_instant(autumn, 90, LONDON) == utc(2027, 10, 31, 0, 30)  # first 01:30 (BST)
    assert wall_clock_instant(autumn, 90, LONDON, closing=True) == utc(2027, 10, 31, 1, 30)  # second (GMT)
    assert wall_clock_instant(date(2027, 3, 27), 24 * 60, LONDON) == utc(2027, 3, 28, 0)
    week = local_week_bounds(utc(2027, 3, 28, 12), LONDON)  # the week the clocks change in
    assert week == (utc(2027, 3, 22, 0), utc(2027, 3, 28, 23))  # Monday 00:00 GMT to Monday 00:00 BST


# -- overrides, buffers, notice, horizon, limits --------------------------------------------------


def test_a_date_override_replaces_the_weekly_hours_and_an_empty_one_is_a_day_off() -> None:
    special = rules(
        overrides={
            date(2027, 3, 29): (),  # Monday off
            date(2027, 3, 30): (Window(13 * 60, 15 * 60),),  # Tuesday afternoon only
            date(2027, 3, 28): (Window(10 * 60, 11 * 60),),  # and an hour on Sunday
        }
    )
    found = free_slots(special, HOUR, london(2027, 3, 28, 0), london(2027, 3, 31, 0), EARLY)
    assert local(found) == [
        "2027-03-28T10:00:00+01:00",
        "2027-03-30T13:00:00+01:00",
        "2027-03-30T13:30:00+01:00",
        "2027-03-30T14:00:00+01:00",
    ]


def test_buffers_keep_the_gap_after_one_session_and_before_the_next() -> None:
    buffered = rules(
        buffer_before=timedelta(minutes=15),
        buffer_after=timedelta(minutes=15),
        slot_interval=timedelta(minutes=15),
    )
    existing = session(utc(2027, 3, 29, 10), before=15, after=15)  # 11:00-12:00 BST, holds 10:45-12:15
    found = free_slots(buffered, HOUR, london(2027, 3, 29, 9), london(2027, 3, 29, 14), EARLY, [existing])
    starts = [s.astimezone(LONDON).strftime("%H:%M") for s in found]
    # Before: a session must end (with its own 15 minutes after) by 10:45; after: it may start
    # once 12:15 and its own 15 minutes before have passed. The gap is the two buffers.
    assert starts == ["09:00", "09:15", "09:30", "12:30", "12:45", "13:00", "13:15", "13:30", "13:45"]
    verdict = check_slot(buffered, HOUR, utc(2027, 3, 29, 11, 15), EARLY, [existing])  # 12:15 BST
    assert verdict.refusal is Refusal.TAKEN and verdict.conflict is existing


def test_a_new_sessions_own_buffer_keeps_it_off_a_session_booked_without_buffers() -> None:
    buffered = rules(buffer_before=timedelta(minutes=15), buffer_after=timedelta(minutes=15))
    unbuffered = session(utc(2027, 3, 29, 10))  # 11:00-12:00 BST, booked before buffers were set
    assert check_slot(buffered, HOUR, utc(2027, 3, 29, 11), EARLY, [unbuffered]).refusal is Refusal.TAKEN
    assert check_slot(buffered, HOUR, utc(2027, 3, 29, 9), EARLY, [unbuffered]).refusal is Refusal.TAKEN
    assert check_slot(rules(), HOUR, utc(2027, 3, 29, 11), EARLY, [unbuffered]).free


def test_the_range_holds_starts_from_its_start_up_to_but_not_including_its_end() -> None:
    found = free_slots(rules(), HOUR, london(2027, 3, 29, 9, 30), london(2027, 3, 29, 10, 30), EARLY)
    assert local(found) == ["2027-03-29T09:30:00+01:00", "2027-03-29T10:00:00+01:00"]


def test_minimum_notice_and_booking_horizon_bound_the_slots() -> None:
    now = utc(2027, 3, 29, 10, 10)  # Monday 11:10 BST
    limited = rules(minimum_notice=timedelta(hours=2), booking_horizon=timedelta(days=2))
    found = free_slots(limited, HOUR, london(2027, 3, 29, 0), london(2027, 4, 5, 0), now)
    assert found[0].astimezone(LONDON).isoformat() == "2027-03-29T13:30:00+01:00"  # first step after 13:10
    assert found[-1] <= now + timedelta(days=2)
    assert found[-1].astimezone(LONDON).isoformat() == "2027-03-31T11:00:00+01:00"
    assert check_slot(limited, HOUR, utc(2027, 3, 29, 12), now).refusal is Refusal.TOO_SOON
    assert check_slot(limited, HOUR, utc(2027, 4, 1, 9), now).refusal is Refusal.TOO_FAR_AHEAD


def test_daily_limit_counts_local_days_and_weekly_limit_counts_local_weeks() -> None:
    late = rules(weekly={d: (Window(0, 24 * 60),) for d in range(7)}, max_per_day=2, max_per_week=3)
    # 00:30 BST on Tuesday 30 March is Monday 23:30 UTC: it counts for Tuesday, locally.
    taken = [
        session(utc(2027, 3, 29, 23, 30), blocks=False),  # completed sessions count too
        session(utc(2027, 3, 30, 9)),
    ]
    found = free_slots(late, HOUR, london(2027, 3, 29, 0), london(2027, 4, 1, 0), EARLY, taken)
    days = {s.astimezone(LONDON).date() for s in found}
    assert date(2027, 3, 30) not in days  # Tuesday is full (two sessions, local)
    assert {date(2027, 3, 29), date(2027, 3, 31)} <= days
    assert check_slot(late, HOUR, utc(2027, 3, 30, 14), EARLY, taken).refusal is Refusal.DAY_FULL
    third = [*taken, session(utc(2027, 3, 31, 9))]
    assert check_slot(late, HOUR, utc(2027, 4, 1, 9), EARLY, third).refusal is Refusal.WEEK_FULL
    # The next local week (from Monday 5 April) is open again.
    assert check_slot(late, HOUR, utc(2027, 4, 5, 9), EARLY, third).free


def test_a_start_off_the_slot_steps_or_outside_the_windows_is_not_a_slot() -> None:
    assert check_slot(rules(), HOUR, utc(2027, 3, 29, 8, 10), EARLY).refusal is Refusal.OUTSIDE_AVAILABILITY
    assert check_slot(rules(), HOUR, utc(2027, 3, 29, 15, 30), EARLY).refusal is Refusal.OUTSIDE_AVAILABILITY
    assert check_slot(rules(), HOUR, utc(2027, 3, 28, 10), EARLY).refusal is Refusal.OUTSIDE_AVAILABILITY
    assert check_slot(rules(), HOUR, utc(2027, 3, 29, 15), EARLY).free  # 16:00-17:00 BST


# -- windows that touch ------------------------------------------------------------------------


def test_a_session_runs_on_into_a_window_that_touches_its_own() -> None:
    split = rules(weekly={0: (Window(9 * 60, 12 * 60), Window(12 * 60, 17 * 60))})
    apart = rules(weekly={0: (Window(9 * 60, 12 * 60), Window(12 * 60 + 15, 17 * 60))})
    monday = (london(2027, 3, 29, 0), london(2027, 3, 30, 0))
    assert free_slots(split, HOUR, *monday, EARLY) == free_slots(rules(), HOUR, *monday, EARLY)
    assert check_slot(split, HOUR, london(2027, 3, 29, 11, 30), EARLY).free
    starts = local(free_slots(apart, HOUR, *monday, EARLY))
    assert "2027-03-29T11:00:00+01:00" in starts and "2027-03-29T11:30:00+01:00" not in starts
    verdict = check_slot(apart, HOUR, london(2027, 3, 29, 11, 30), EARLY)
    assert verdict.refusal is Refusal.OUTSIDE_AVAILABILITY


def test_a_session_runs_past_midnight_when_the_next_day_opens_at_midnight() -> None:
    # Friday 20:00-24:00 and Saturday 00:00-02:00; the Saturday of 3 April 2027 taken off.
    evenings = rules(weekly={4: (Window(20 * 60, 24 * 60),), 5: (Window(0, 2 * 60),)})
    found = local(free_slots(evenings, 2 * HOUR, london(2027, 3, 26, 0), london(2027, 3, 28, 0), EARLY))
    assert found[-3:] == [
        "2027-03-26T23:00:00+00:00",  # Friday 23:00 to Saturday 01:00
        "2027-03-26T23:30:00+00:00",
        "2027-03-27T00:00:00+00:00",  # Saturday's own steps: 00:00 to 02:00
    ]
    assert check_slot(evenings, 2 * HOUR, london(2027, 3, 26, 23, 30), EARLY).free
    day_off = rules(weekly=evenings.weekly, overrides={date(2027, 4, 3): ()})
    verdict = check_slot(day_off, 2 * HOUR, london(2027, 4, 2, 23, 30), EARLY)
    assert verdict.refusal is Refusal.OUTSIDE_AVAILABILITY
    assert local(free_slots(day_off, 2 * HOUR, london(2027, 4, 2, 0), london(2027, 4, 4, 0), EARLY))[-1] == (
        "2027-04-02T22:00:00+01:00"
    )


def test_a_session_across_midnight_counts_towards_the_day_it_starts() -> None:
    evenings = rules(weekly={4: (Window(20 * 60, 24 * 60),), 5: (Window(0, 2 * 60),)}, max_per_day=1)
    friday_late = session(london(2027, 3, 26, 23, 30), minutes=60)
    assert check_slot(evenings, HOUR, london(2027, 3, 27, 1), EARLY, [friday_late]).free
    verdict = check_slot(evenings, HOUR, london(2027, 3, 26, 20), EARLY, [friday_late])
    assert verdict.refusal is Refusal.DAY_FULL


def test_occupancy_finds_a_conflict_hidden_behind_a_shorter_session() -> None:
    # A long session starting first still collides with a candidate after a short one.
    long_one = session(utc(2027, 3, 29, 8), minutes=240)
    short_one = session(utc(2027, 3, 29, 9), minutes=30)
    occupancy = Occupancy([long_one, short_one], LONDON)
    assert occupancy.conflict(utc(2027, 3, 29, 11), utc(2027, 3, 29, 11, 30)) is long_one
    assert occupancy.conflict(utc(2027, 3, 29, 12), utc(2027, 3, 29, 13)) is None


# -- the two views agree --------------------------------------------------------------------------

minutes_of_day = st.integers(min_value=0, max_value=24 * 12 - 1).map(lambda n: n * 5)


@st.composite
def availability(draw: st.DrawFn) -> Rules:
    weekly = {}
    for day in draw(st.sets(st.integers(0, 6), max_size=7)):
        # Often from or to midnight, sometimes split in two that touch: windows that join.
        start = draw(st.one_of(st.just(0), minutes_of_day))
        end = draw(st.one_of(st.just(288), st.integers(start // 5 + 1, 288)).map(lambda n: n * 5))
        middle = draw(st.sampled_from([None, (start + end) // 10 * 5]))
        if middle is not None and start < middle < end:
            weekly[day] = (Window(start, middle), Window(middle, end))
        else:
            weekly[day] = (Window(start, end),)
    overrides = {}
    for day in draw(st.sets(st.sampled_from([date(2027, 3, 28), date(2027, 10, 31), date(2027, 3, 29)]))):
        start = draw(minutes_of_day)
        end = draw(st.integers(min_value=start // 5 + 1, max_value=288).map(lambda n: n * 5))
        overrides[day] = draw(st.sampled_from([(), (Window(start, end),)]))
    return Rules(
        timezone=LONDON,
        weekly=weekly,
        overrides=overrides,
        buffer_before=timedelta(minutes=draw(st.sampled_from([0, 10, 15]))),
        buffer_after=timedelta(minutes=draw(st.sampled_from([0, 5, 30]))),
        slot_interval=timedelta(minutes=draw(st.sampled_from([15, 20, 30]))),
        max_per_day=draw(st.sampled_from([None, 1, 3])),
        max_per_week=draw(st.sampled_from([None, 4])),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    availability(),
    st.sampled_from([date(2027, 3, 27), date(2027, 10, 30)]),
    st.lists(st.integers(0, 3 * 24 * 12), max_size=4),
    st.sampled_from([30, 45, 60]),
)
def test_every_listed_slot_is_bookable_and_every_bookable_start_is_listed(
    rules_: Rules, first_day: date, existing: list[int], minutes: int
) -> None:
    """Across both 2027 changes, ``check_slot`` says free exactly for the starts ``free_slots`` lists."""
    origin = wall_clock_instant(first_day, 0, LONDON)
    taken: list[Taken] = []
    for offset in existing:  # existing sessions that do not overlap each other, as the database keeps them
        candidate = session(origin + timedelta(minutes=5 * offset), 60, before=10, after=10)
        if all(
            candidate.blocked_until <= t.blocked_from or t.blocked_until <= candidate.blocked_from
            for t in taken
        ):
            taken.append(candidate)
    end = origin + timedelta(days=3)
    duration = timedelta(minutes=minutes)
    listed = set(free_slots(rules_, duration, origin, end, EARLY, taken))
    for step in range(0, 3 * 24 * 12):
        start = origin + timedelta(minutes=5 * step)
        assert check_slot(rules_, duration, start, EARLY, taken).free == (start in listed), start
    for start in listed:
        assert start.astimezone(LONDON).date() >= first_day
        blocked = (start - rules_.buffer_before, start + duration + rules_.buffer_after)
        assert all(blocked[1] <= t.blocked_from or t.blocked_until <= blocked[0] for t in taken)
