"""The impact report's arithmetic: what incubated enterprises bid for and won from the anchors.

Pure: ``service/impact.py`` loads the facts, this counts them. Every figure is a count or a sum
over the facts given, so a test can recount it directly. Enterprise filters (cohort, area) and
line filters (anchor, CPV division) both narrow the bids: a bid counts when its enterprise and
its line are both in scope. The period narrows each figure by the date that figure is about
(reaching tender-ready, submitting, the outcome, a line's first publication).
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Final

from services.enterprises.vocabulary import ReportGrouping

ENTERPRISE_GROUPS: Final = frozenset({"cohort", "area"})

# A shareable report withholds what fewer enterprises than this stand behind.
MIN_ENTERPRISES: Final = 3

# Figures that come from bids: the ones withheld in a shareable report.
BID_FIGURES: Final = (
    "enterprises_bidding",
    "bids_submitted",
    "bids_won",
    "bids_lost",
    "bids_withdrawn",
    "win_rate",
    "value_won_pence",
    "wins_confirmed",
    "wins_disputed",
    "awards_unrecorded",
    "enterprises_winning",
    "pipeline_value_bid_pence",
    "pipeline_value_won_pence",
    "share_bid",
    "share_won",
    "mentoring_hours_before_wins",
)
ENTERPRISE_FIGURES: Final = ("enterprises", "reached_tender_ready", "median_days_to_tender_ready")


@dataclass(frozen=True)
class EnterpriseFact:
    enterprise_id: uuid.UUID
    cohort_id: uuid.UUID | None
    area: str  # the postcode area, "LS" of "LS6 2QR"
    joined: date  # the cohort's start, or the registration date without a cohort
    tender_ready_on: date | None  # the first time it reached tender_ready


@dataclass(frozen=True)
class LineFact:
    demand_id: uuid.UUID
    anchor_id: uuid.UUID | None
    value_pence: int | None
    cpv_division: str | None
    published_on: date | None
    awarded_enterprise_id: uuid.UUID | None = None  # the incubated enterprise the award names
    awarded_on: date | None = None


@dataclass(frozen=True)
class BidFact:
    enterprise_id: uuid.UUID
    demand_id: uuid.UUID
    status: str
    submitted_on: date | None
    decided_at: datetime | None
    contract_value_pence: int | None
    award_check: str | None

    @property
    def decided_on(self) -> date | None:
        return self.decided_at.date() if self.decided_at else None


@dataclass(frozen=True)
class SessionFact:
    enterprise_id: uuid.UUID
    completed_at: datetime  # when the mentor recorded it
    hours: float
    milestone_linked: bool  # on a milestone, or signing one off


@dataclass(frozen=True)
class Scope:
    start: date | None = None
    end: date | None = None  # inclusive
    cohort_id: uuid.UUID | None = None
    area: str | None = None
    anchor_id: uuid.UUID | None = None
    cpv_division: str | None = None

    def in_period(self, day: date | None) -> bool:
        return (
            day is not None
            and (self.start is None or day >= self.start)
            and (self.end is None or day <= self.end)
        )

    def has_enterprise(self, fact: EnterpriseFact) -> bool:
        return (self.cohort_id is None or fact.cohort_id == self.cohort_id) and (
            self.area is None or fact.area == self.area
        )

    def has_line(self, fact: LineFact | None) -> bool:
        if self.anchor_id is None and self.cpv_division is None:
            return True
        return (
            fact is not None
            and (self.anchor_id is None or fact.anchor_id == self.anchor_id)
            and (self.cpv_division is None or fact.cpv_division == self.cpv_division)
        )


@dataclass(frozen=True)
class Facts:
    enterprises: list[EnterpriseFact]
    lines: list[LineFact]
    bids: list[BidFact]
    sessions: list[SessionFact]


@dataclass
class Figures:
    values: dict[str, Any]
    withheld: list[str] = field(default_factory=list)

    def withhold(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.withheld and self.values.get(name) is not None:
                self.values[name] = None
                self.withheld.append(name)


@dataclass
class AnchorWins:
    anchor_id: uuid.UUID | None
    wins: int
    value_won_pence: int
    enterprises: int


@dataclass
class Group:
    by: ReportGrouping
    key: str | None
    figures: Figures


@dataclass
class Report:
    totals: Figures
    groups: list[Group]
    won_from: list[AnchorWins]
    withheld_won_from: int  # anchors whose wins a shareable report holds back


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def figures(facts: Facts, scope: Scope, *, enterprise_side: bool = True) -> Figures:
    """Every figure of the report for one scope (``enterprise_side`` False: a group of lines,
    for which the enterprise figures would only repeat the totals)."""
    enterprises = {e.enterprise_id: e for e in facts.enterprises if scope.has_enterprise(e)}
    lines = {line.demand_id: line for line in facts.lines}
    in_scope = [
        b for b in facts.bids if b.enterprise_id in enterprises and scope.has_line(lines.get(b.demand_id))
    ]
    submitted = [b for b in in_scope if scope.in_period(b.submitted_on)]
    decided = [b for b in in_scope if scope.in_period(b.decided_on)]
    won = [b for b in decided if b.status == "won"]
    lost = sum(1 for b in decided if b.status == "lost")
    ready = [e for e in enterprises.values() if scope.in_period(e.tender_ready_on)]
    pipeline = [
        line
        for line in facts.lines
        if scope.has_line(line) and scope.in_period(line.published_on) and line.value_pence is not None
    ]
    bid_lines = {b.demand_id for b in in_scope if b.submitted_on is not None}
    won_lines = {b.demand_id for b in in_scope if b.status == "won"}
    pipeline_value = sum(line.value_pence or 0 for line in pipeline)
    value_bid = sum(line.value_pence or 0 for line in pipeline if line.demand_id in bid_lines)
    value_won = sum(line.value_pence or 0 for line in pipeline if line.demand_id in won_lines)
    values: dict[str, Any] = {
        "enterprises": len(enterprises),
        "reached_tender_ready": len(ready),
        "median_days_to_tender_ready": (
            statistics.median((e.tender_ready_on - e.joined).days for e in ready if e.tender_ready_on)
            if ready
            else None
        ),
        "enterprises_bidding": len({b.enterprise_id for b in submitted}),
        "bids_submitted": len(submitted),
        "bids_won": len(won),
        "bids_lost": lost,
        "bids_withdrawn": sum(1 for b in decided if b.status == "withdrawn"),
        "win_rate": _share(len(won), len(won) + lost),
        "value_won_pence": sum(b.contract_value_pence or 0 for b in won),
        "wins_confirmed": sum(1 for b in won if b.award_check == "confirmed"),
        "wins_disputed": sum(1 for b in won if b.award_check == "disputed"),
        "awards_unrecorded": _awards_unrecorded(facts.lines, scope, enterprises, in_scope),
        "enterprises_winning": len({b.enterprise_id for b in won}),
        "pipeline_lines": len(pipeline),
        "pipeline_value_pence": pipeline_value,
        "pipeline_value_bid_pence": value_bid,
        "pipeline_value_won_pence": value_won,
        "share_bid": _share(value_bid, pipeline_value),
        "share_won": _share(value_won, pipeline_value),
        "mentoring_hours_before_wins": _hours_before(facts.sessions, won),
    }
    if not enterprise_side:
        values.update(dict.fromkeys(ENTERPRISE_FIGURES))
    return Figures(values)


def _awards_unrecorded(
    lines: list[LineFact], scope: Scope, enterprises: dict[uuid.UUID, EnterpriseFact], bids: list[BidFact]
) -> int:
    """Awards in the period to an enterprise in scope that has not recorded the win: to check."""
    recorded = {(b.enterprise_id, b.demand_id) for b in bids if b.status == "won"}
    return sum(
        1
        for line in lines
        if line.awarded_enterprise_id in enterprises
        and scope.has_line(line)
        and scope.in_period(line.awarded_on)
        and (line.awarded_enterprise_id, line.demand_id) not in recorded
    )


def _hours_before(sessions: list[SessionFact], won: list[BidFact]) -> float:
    """Hours of milestone mentoring each winner had recorded before its first win, each session
    counted once."""
    first_win: dict[uuid.UUID, datetime] = {}
    for bid in won:
        if bid.decided_at is not None:
            earlier = first_win.get(bid.enterprise_id, bid.decided_at)
            first_win[bid.enterprise_id] = min(earlier, bid.decided_at)
    hours = sum(
        s.hours
        for s in sessions
        if s.milestone_linked
        and s.enterprise_id in first_win
        and s.completed_at <= first_win[s.enterprise_id]
    )
    return round(hours, 2)


def _group_scopes(facts: Facts, scope: Scope, by: ReportGrouping) -> list[tuple[str | None, Scope]]:
    """The groups that have something in scope, each with its narrowed scope."""
    keys: set[Any]
    if by == "cohort":
        keys = {e.cohort_id for e in facts.enterprises if scope.has_enterprise(e)}
        return [(_text(k), replace(scope, cohort_id=k)) if k else (None, scope) for k in _sorted(keys)]
    if by == "area":
        keys = {e.area for e in facts.enterprises if scope.has_enterprise(e)}
        return [(k, replace(scope, area=k)) for k in sorted(keys)]
    if by == "anchor":
        keys = {line.anchor_id for line in facts.lines if scope.has_line(line) and line.anchor_id}
        return [(_text(k), replace(scope, anchor_id=k)) for k in _sorted(keys)]
    keys = {line.cpv_division for line in facts.lines if scope.has_line(line) and line.cpv_division}
    return [(k, replace(scope, cpv_division=k)) for k in sorted(keys)]


def _text(key: object) -> str | None:
    return None if key is None else str(key)


def _sorted(keys: set[Any]) -> list[Any]:
    return sorted(keys, key=lambda k: (k is None, str(k)))


def _group_figures(facts: Facts, key: str | None, scope: Scope, by: ReportGrouping) -> Figures:
    if key is None and by == "cohort":
        # Enterprises with no cohort: the cohort filter cannot name them, so narrow the facts.
        facts = replace(facts, enterprises=[e for e in facts.enterprises if e.cohort_id is None])
    return figures(facts, scope, enterprise_side=by in ENTERPRISE_GROUPS)


def won_from(facts: Facts, scope: Scope) -> list[AnchorWins]:
    """Wins in the period by the anchor that awarded them, the largest value first."""
    enterprises = {e.enterprise_id for e in facts.enterprises if scope.has_enterprise(e)}
    lines = {line.demand_id: line for line in facts.lines}
    by_anchor: dict[uuid.UUID | None, list[BidFact]] = {}
    for bid in facts.bids:
        line = lines.get(bid.demand_id)
        if (
            bid.status == "won"
            and bid.enterprise_id in enterprises
            and scope.has_line(line)
            and scope.in_period(bid.decided_on)
        ):
            by_anchor.setdefault(line.anchor_id if line else None, []).append(bid)
    rows = [
        AnchorWins(
            anchor_id,
            len(bids),
            sum(b.contract_value_pence or 0 for b in bids),
            len({b.enterprise_id for b in bids}),
        )
        for anchor_id, bids in by_anchor.items()
    ]
    return sorted(rows, key=lambda r: (-r.value_won_pence, str(r.anchor_id)))


def report(facts: Facts, scope: Scope, group_by: ReportGrouping | None, *, shareable: bool) -> Report:
    totals = figures(facts, scope)
    groups = [
        Group(group_by, key, _group_figures(facts, key, narrowed, group_by))
        for key, narrowed in (_group_scopes(facts, scope, group_by) if group_by else [])
    ]
    wins = won_from(facts, scope)
    withheld_wins = 0
    if shareable:
        withhold_small(totals, [g.figures for g in groups])
        kept = [w for w in wins if w.enterprises >= MIN_ENTERPRISES]
        withheld_wins = len(wins) - len(kept)
        if withheld_wins == 1 and kept:
            # One anchor held back could be recovered from the totals: hold back the smallest too.
            kept.remove(min(kept, key=lambda w: (w.enterprises, w.value_won_pence)))
            withheld_wins += 1
        wins = kept
    return Report(totals, groups, wins, withheld_wins)


def _bidders(figures: Figures) -> int:
    return int(figures.values["enterprises_bidding"] or 0)


def withhold_small(totals: Figures, groups: list[Figures]) -> None:
    """Withhold the bid figures that one or two enterprises stand behind (fewer than
    ``MIN_ENTERPRISES``, none excepted: a figure of no bid reveals none); when
    that leaves exactly one group withheld beside shown totals, withhold the next smallest too, so
    that the totals less the groups shown do not give the withheld one back."""
    count = _bidders
    small = [g for g in groups if 0 < count(g) < MIN_ENTERPRISES]
    if 0 < count(totals) < MIN_ENTERPRISES:
        totals.withhold(BID_FIGURES)
    for group in small:
        group.withhold(BID_FIGURES)
    shown = [g for g in groups if count(g) >= MIN_ENTERPRISES]
    if len(small) == 1 and shown and not totals.withheld:
        min(shown, key=count).withhold(BID_FIGURES)
