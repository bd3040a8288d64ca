"""Free slots: a mentor's availability rules, read in the mentor's own time zone, minus what is taken.

Rules are wall-clock times (a weekly 09:00-17:00 is 09:00-17:00 local on both sides
of a daylight-saving change); every instant is computed in UTC from them. Where a
window edge falls in a clock change, the window covers every instant the clock shows
inside it: an edge in the skipped hour moves to the moment the clock jumps, and in
the repeated hour the window opens at the first occurrence of its start and closes
at the second occurrence of its end.

Windows that touch are one stretch of time: a session starts on the steps of its own window
and may run on into the next one (11:30-12:30 when a day is set as 09:00-12:00 and
12:00-17:00, or past midnight after a window that ends at 24:00 when the next day's opens at
00:00).

Buffers: a session occupies ``[start - buffer_before, end + buffer_after)``, and two
booked sessions of one mentor never occupy the same instant (the same rule as the
PostgreSQL exclusion constraint on ``sessions``), so two sessions are separated by
the buffer after the first plus the buffer before the second.

Everything here is pure: no database, no clock (``now`` is an argument).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True, order=True)
class Window:
    """A wall-clock window in minutes after local midnight; ``end_minute`` may be 1440 (24:00)."""

    start_minute: int
    end_minute: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_minute < self.end_minute <= MINUTES_PER_DAY:
            raise ValueError(f"not a window: {self.start_minute}-{self.end_minute}")


@dataclass(frozen=True)
class Rules:
    """A mentor's availability rules."""

    timezone: ZoneInfo
    weekly: Mapping[int, Sequence[Window]]  # weekday (0 = Monday) -> windows
    overrides: Mapping[date, Sequence[Window]] = field(default_factory=dict)  # () = a day off
    buffer_before: timedelta = timedelta(0)
    buffer_after: timedelta = timedelta(0)
    minimum_notice: timedelta = timedelta(0)
    slot_interval: timedelta = timedelta(minutes=30)
    booking_horizon: timedelta | None = None
    max_per_day: int | None = None
    max_per_week: int | None = None

    def windows_on(self, day: date) -> Sequence[Window]:
        """The windows of a local date: its override if it has one, else its weekday's."""
        found = self.overrides.get(day)
        return found if found is not None else self.weekly.get(day.weekday(), ())


@dataclass(frozen=True)
class Taken:
    """A session of the mentor that is not cancelled.

    ``blocks`` is true for a booked session (its time, buffers included, is taken);
    completed and no-show sessions only count towards the daily and weekly limits.
    """

    start: datetime
    blocked_from: datetime
    blocked_until: datetime
    blocks: bool = True
    ref: object = None  # the caller's handle on it (a session id), named in refusals


class Refusal(StrEnum):
    """Why a start time is not a free slot."""

    OUTSIDE_AVAILABILITY = "outside_availability"
    TOO_SOON = "too_soon"
    TOO_FAR_AHEAD = "too_far_ahead"
    DAY_FULL = "day_full"
    WEEK_FULL = "week_full"
    TAKEN = "taken"


@dataclass(frozen=True)
class Verdict:
    refusal: Refusal | None
    conflict: Taken | None = None

    @property
    def free(self) -> bool:
        return self.refusal is None


# -- wall clock to instants ---------------------------------------------------------------


def _clock_jump(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant in ``(before, after]`` where the zone's UTC offset changes (to the second)."""
    target = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


@lru_cache(maxsize=16384)  # mentors share zones and hours: the same edges come back all the time
def wall_clock_instant(day: date, minute: int, zone: ZoneInfo, *, closing: bool = False) -> datetime:
    """The UTC instant at which the clock in ``zone`` shows ``minute`` after midnight of ``day``.

    A repeated time gives its first occurrence, or its second when ``closing`` (the end of
    a window); a skipped time gives the moment the clock jumps past it.
    """
    naive = datetime.combine(day, time()) + timedelta(minutes=minute)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return second if closing else first  # equal unless the hour repeats
    return _clock_jump(min(first, second), max(first, second), zone)


def window_instants(rules: Rules, day: date) -> list[tuple[datetime, datetime]]:
    """The windows of a local date as UTC ``(start, end)`` pairs, in order, empty ones dropped."""
    instants = []
    for window in sorted(rules.windows_on(day)):
        start = wall_clock_instant(day, window.start_minute, rules.timezone)
        end = wall_clock_instant(day, window.end_minute, rules.timezone, closing=True)
        if end > start:
            instants.append((start, end))
    return instants


def _reach(
    rules: Rules, day: date, windows: list[tuple[datetime, datetime]], n: int, limit: datetime
) -> datetime:
    """Where availability stops that runs on without a gap from the end of ``windows[n]`` (the
    windows of local ``day``), looking no further than ``limit``."""
    reach = windows[n][1]
    later = windows[n + 1 :]
    while reach < limit:
        for start, stop in later:
            if start > reach:
                return reach
            reach = max(reach, stop)
        day += timedelta(days=1)
        if reach < wall_clock_instant(day, 0, rules.timezone):
            return reach  # the next day's windows open at its midnight at the earliest
        later = window_instants(rules, day)
    return reach


def _starts(rules: Rules, day: date, duration: timedelta) -> Iterator[tuple[datetime, datetime, datetime]]:
    """Each window of ``day`` as ``(first start, end of its starts, last start for duration)``."""
    windows = window_instants(rules, day)
    for n, (start, end) in enumerate(windows):
        yield start, end, _reach(rules, day, windows, n, end + duration) - duration


def slot_end(start: datetime, length: timedelta) -> datetime:
    """The end of a slot or session: its start plus its length as instants, in the start's zone.

    Python adds a timedelta to an aware time on the wall clock of its own zone, which across a
    clock change gives a slot an hour too many or too few; the sum is taken in UTC instead.
    """
    return (start.astimezone(UTC) + length).astimezone(start.tzinfo)


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def iso_week(day: date) -> tuple[int, int]:
    year, week, _ = day.isocalendar()
    return year, week


def local_week_bounds(instant: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC bounds of the local Monday-to-Sunday week that contains ``instant``."""
    day = local_date(instant, zone)
    monday = day - timedelta(days=day.weekday())
    start = wall_clock_instant(monday, 0, zone)
    end = wall_clock_instant(monday + timedelta(days=7), 0, zone)
    return start, end


# -- what is taken ------------------------------------------------------------------------


class Occupancy:
    """A mentor's taken sessions, indexed for overlap queries and per-day and per-week counts."""

    def __init__(self, taken: Iterable[Taken], zone: ZoneInfo) -> None:
        self.taken = list(taken)
        blocking = sorted((t for t in self.taken if t.blocks), key=lambda t: t.blocked_from)
        self._blocking = blocking
        self._starts = [t.blocked_from for t in blocking]
        # The session reaching furthest among the first i: correct even if stored ranges overlapped.
        self._furthest: list[Taken] = []
        for t in blocking:
            previous = self._furthest[-1] if self._furthest else None
            self._furthest.append(
                t if previous is None or t.blocked_until > previous.blocked_until else previous
            )
        self.per_day: Counter[date] = Counter()
        self.per_week: Counter[tuple[int, int]] = Counter()
        for t in self.taken:
            day = local_date(t.start, zone)
            self.per_day[day] += 1
            self.per_week[iso_week(day)] += 1

    def conflict(self, blocked_from: datetime, blocked_until: datetime) -> Taken | None:
        """A booked session whose occupied time overlaps ``[blocked_from, blocked_until)``."""
        index = bisect.bisect_left(self._starts, blocked_until)
        if index == 0 or self._furthest[index - 1].blocked_until <= blocked_from:
            return None
        return self._furthest[index - 1]


# -- slots --------------------------------------------------------------------------------


def _candidates(rules: Rules, duration: timedelta, days: Iterable[date]) -> Iterator[datetime]:
    """Every start the windows of ``days`` offer for ``duration``, stepping by the slot interval."""
    step = rules.slot_interval
    for day in days:
        for start, window_end, last in _starts(rules, day, duration):
            while start < window_end and start <= last:
                yield start
                start += step


def _verdict(
    rules: Rules, duration: timedelta, start: datetime, now: datetime, occupancy: Occupancy
) -> Verdict:
    """Everything but the windows: notice, horizon, limits, and what is taken."""
    if start < now + rules.minimum_notice:
        return Verdict(Refusal.TOO_SOON)
    if rules.booking_horizon is not None and start > now + rules.booking_horizon:
        return Verdict(Refusal.TOO_FAR_AHEAD)
    day = local_date(start, rules.timezone)
    if rules.max_per_day is not None and occupancy.per_day[day] >= rules.max_per_day:
        return Verdict(Refusal.DAY_FULL)
    if rules.max_per_week is not None and occupancy.per_week[iso_week(day)] >= rules.max_per_week:
        return Verdict(Refusal.WEEK_FULL)
    conflict = occupancy.conflict(start - rules.buffer_before, start + duration + rules.buffer_after)
    if conflict is not None:
        return Verdict(Refusal.TAKEN, conflict)
    return Verdict(None)


def _local_days(rules: Rules, range_start: datetime, range_end: datetime) -> list[date]:
    # A day before and after: a window of a neighbouring local date can reach into the range.
    first = local_date(range_start, rules.timezone) - timedelta(days=1)
    last = local_date(range_end, rules.timezone) + timedelta(days=1)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def iter_free_slots(
    rules: Rules,
    duration: timedelta,
    range_start: datetime,
    range_end: datetime,
    now: datetime,
    taken: Iterable[Taken] | Occupancy = (),
) -> Iterator[datetime]:
    """Free start times in ``[range_start, range_end)`` for a session of ``duration``, soonest first,
    computed lazily (a search over many mentors stops as soon as it has a page).

    The same rules as :func:`check_slot`, arranged for speed: the limits are checked once per
    local day (a window's starts all fall on its own local date), the notice and the horizon
    clamp the steps instead of testing each one.
    """
    occupancy = taken if isinstance(taken, Occupancy) else Occupancy(taken, rules.timezone)
    earliest = max(range_start, now + rules.minimum_notice)
    horizon = None if rules.booking_horizon is None else now + rules.booking_horizon
    if earliest >= range_end or (horizon is not None and horizon < earliest):
        return
    step, before, after = rules.slot_interval, rules.buffer_before, rules.buffer_after
    conflict = occupancy.conflict
    last: datetime | None = None
    for day in _local_days(rules, earliest, range_end):
        if rules.max_per_day is not None and occupancy.per_day[day] >= rules.max_per_day:
            continue
        if rules.max_per_week is not None and occupancy.per_week[iso_week(day)] >= rules.max_per_week:
            continue
        for window_start, window_end, final in _starts(rules, day, duration):
            if horizon is not None and horizon < final:
                final = horizon
            start = window_start
            if start < earliest:
                start += step * -((window_start - earliest) // step)  # the first step at or after it
            while start <= final and start < window_end and start < range_end:
                if (last is None or start > last) and conflict(
                    start - before, start + duration + after
                ) is None:
                    yield start
                    last = start
                start += step


def free_slots(
    rules: Rules,
    duration: timedelta,
    range_start: datetime,
    range_end: datetime,
    now: datetime,
    taken: Iterable[Taken] | Occupancy = (),
) -> list[datetime]:
    """Free start times in ``[range_start, range_end)`` for a session of ``duration`` (UTC, sorted)."""
    return list(iter_free_slots(rules, duration, range_start, range_end, now, taken))


def check_slot(
    rules: Rules,
    duration: timedelta,
    start: datetime,
    now: datetime,
    taken: Iterable[Taken] | Occupancy = (),
) -> Verdict:
    """Whether ``start`` is a free slot for ``duration``, and if not, why (and with what)."""
    occupancy = taken if isinstance(taken, Occupancy) else Occupancy(taken, rules.timezone)
    start = start.astimezone(UTC)  # instant arithmetic below, whatever zone the caller used
    day = local_date(start, rules.timezone)
    offered = any(
        candidate == start
        for candidate in _candidates(rules, duration, (day - timedelta(days=1), day))
        if candidate <= start
    )
    if not offered:
        return Verdict(Refusal.OUTSIDE_AVAILABILITY)
    return _verdict(rules, duration, start, now, occupancy)


def occupied_range(rules: Rules, start: datetime, duration: timedelta) -> tuple[datetime, datetime]:
    """The time a session takes from its mentor, buffers included (UTC instants)."""
    start = start.astimezone(UTC)
    return start - rules.buffer_before, start + duration + rules.buffer_after
