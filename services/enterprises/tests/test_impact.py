"""The impact report's arithmetic, on facts built by hand (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from services.enterprises import impact
from services.enterprises.impact import BidFact, EnterpriseFact, Facts, LineFact, Scope, SessionFact

COHORT_A, COHORT_B = uuid.uuid4(), uuid.uuid4()
ANCHOR_X, ANCHOR_Y = uuid.uuid4(), uuid.uuid4()


def enterprise(cohort: uuid.UUID | None, *, area: str = "LS", ready: date | None = None) -> EnterpriseFact:
    return EnterpriseFact(uuid.uuid4(), cohort, area, date(2026, 1, 1), ready)


def line(anchor: uuid.UUID, value: int, *, cpv: str = "45", on: date = date(2026, 2, 1)) -> LineFact:
    return LineFact(uuid.uuid4(), anchor, value, cpv, on)


def bid(
    who: EnterpriseFact,
    what: LineFact,
    status: str,
    *,
    submitted: date | None = date(2026, 3, 1),
    decided: datetime | None = None,
    value: int | None = None,
    check: str | None = None,
) -> BidFact:
    if decided is None and status in ("won", "lost", "withdrawn"):
        decided = datetime(2026, 4, 1, 12, tzinfo=UTC)
    return BidFact(who.enterprise_id, what.demand_id, status, submitted, decided, value, check)


def test_figures_count_what_the_facts_hold() -> None:
    a1 = enterprise(COHORT_A, ready=date(2026, 1, 31))
    a2 = enterprise(COHORT_A, ready=date(2026, 3, 2))
    b1 = enterprise(COHORT_B, area="BD")
    l1, l2, l3 = line(ANCHOR_X, 100_000), line(ANCHOR_X, 300_000), line(ANCHOR_Y, 600_000, cpv="85")
    bids = [
        bid(a1, l1, "won", value=90_000, check="confirmed"),
        bid(a2, l1, "lost"),
        bid(a2, l3, "won", value=550_000, check="disputed"),
        bid(b1, l2, "submitted"),
        bid(b1, l3, "intended", submitted=None),
    ]
    sessions = [
        SessionFact(a1.enterprise_id, datetime(2026, 3, 10, 11, tzinfo=UTC), 1.5, True),
        SessionFact(a1.enterprise_id, datetime(2026, 3, 11, 11, tzinfo=UTC), 1.0, False),
        SessionFact(a1.enterprise_id, datetime(2026, 5, 1, 11, tzinfo=UTC), 2.0, True),
        SessionFact(b1.enterprise_id, datetime(2026, 3, 1, 11, tzinfo=UTC), 4.0, True),
    ]
    facts = Facts([a1, a2, b1], [l1, l2, l3], bids, sessions)

    values = impact.figures(facts, Scope()).values

    assert values["enterprises"] == 3
    assert values["reached_tender_ready"] == 2
    assert values["median_days_to_tender_ready"] == (30 + 60) / 2
    assert values["bids_submitted"] == 4
    assert values["enterprises_bidding"] == 3
    assert (values["bids_won"], values["bids_lost"], values["win_rate"]) == (2, 1, round(2 / 3, 4))
    assert values["value_won_pence"] == 640_000
    assert (values["wins_confirmed"], values["wins_disputed"]) == (1, 1)
    assert values["pipeline_value_pence"] == 1_000_000
    assert values["pipeline_value_bid_pence"] == 1_000_000
    assert values["pipeline_value_won_pence"] == 700_000
    assert values["share_won"] == 0.7
    # a1's milestone session before its win on 1 April; not the unlinked one, not the later one.
    assert values["mentoring_hours_before_wins"] == 1.5


def test_period_and_filters_narrow_each_figure_by_its_own_date() -> None:
    a1 = enterprise(COHORT_A, ready=date(2026, 1, 31))
    b1 = enterprise(COHORT_B, area="BD", ready=date(2026, 6, 1))
    early, late = line(ANCHOR_X, 100, on=date(2025, 12, 1)), line(ANCHOR_Y, 200, cpv="85")
    bids = [
        bid(
            a1, early, "won", submitted=date(2025, 12, 5), decided=datetime(2026, 1, 10, tzinfo=UTC), value=80
        ),
        bid(b1, late, "lost", decided=datetime(2026, 7, 1, tzinfo=UTC)),
    ]
    facts = Facts([a1, b1], [early, late], bids, [])

    q1 = impact.figures(facts, Scope(start=date(2026, 1, 1), end=date(2026, 3, 31))).values
    assert (q1["reached_tender_ready"], q1["bids_submitted"], q1["bids_won"], q1["bids_lost"]) == (1, 1, 1, 0)
    assert q1["pipeline_value_pence"] == 200  # the line first published in the period
    assert q1["pipeline_value_won_pence"] == 0  # the line won was published before it

    only_y = impact.figures(facts, Scope(anchor_id=ANCHOR_Y)).values
    assert (only_y["bids_submitted"], only_y["bids_lost"], only_y["bids_won"]) == (1, 1, 0)
    assert impact.figures(facts, Scope(cpv_division="45")).values["value_won_pence"] == 80
    assert impact.figures(facts, Scope(area="BD")).values["enterprises"] == 1
    assert impact.figures(facts, Scope(cohort_id=COHORT_A)).values["bids_won"] == 1


def test_an_award_the_enterprise_has_not_recorded_is_counted_to_check() -> None:
    a1 = enterprise(COHORT_A)
    awarded = LineFact(
        uuid.uuid4(), ANCHOR_X, 500, "45", date(2026, 2, 1), a1.enterprise_id, date(2026, 4, 2)
    )
    facts = Facts([a1], [awarded], [bid(a1, awarded, "submitted")], [])
    assert impact.figures(facts, Scope()).values["awards_unrecorded"] == 1
    recorded = Facts([a1], [awarded], [bid(a1, awarded, "won", value=500, check="confirmed")], [])
    assert impact.figures(recorded, Scope()).values["awards_unrecorded"] == 0


def test_groups_by_cohort_include_enterprises_without_one_and_lines_groups_skip_enterprise_figures() -> None:
    a1, none = enterprise(COHORT_A), enterprise(None)
    l1 = line(ANCHOR_X, 100)
    facts = Facts([a1, none], [l1], [bid(a1, l1, "submitted"), bid(none, l1, "submitted")], [])

    by_cohort = impact.report(facts, Scope(), "cohort", shareable=False).groups
    assert [(g.key, g.figures.values["bids_submitted"]) for g in by_cohort] == [(str(COHORT_A), 1), (None, 1)]

    by_anchor = impact.report(facts, Scope(), "anchor", shareable=False).groups
    assert [g.key for g in by_anchor] == [str(ANCHOR_X)]
    assert by_anchor[0].figures.values["enterprises"] is None
    assert by_anchor[0].figures.values["bids_submitted"] == 2


def test_shareable_report_withholds_small_groups_and_one_more_so_totals_do_not_give_them_back() -> None:
    big = [enterprise(COHORT_A) for _ in range(3)]
    mid = [enterprise(COHORT_B) for _ in range(4)]
    alone = enterprise(None)
    l1 = line(ANCHOR_X, 1_000)
    bids = [bid(e, l1, "won", value=100, check="confirmed") for e in (*big, *mid, alone)]
    facts = Facts([*big, *mid, alone], [l1], bids, [])

    result = impact.report(facts, Scope(), "cohort", shareable=True)

    withheld = {g.key: g.figures.withheld for g in result.groups}
    assert "value_won_pence" in withheld[None]  # one enterprise
    assert "value_won_pence" in withheld[str(COHORT_A)]  # the smallest shown group, held back too
    assert withheld[str(COHORT_B)] == []
    assert result.totals.values["value_won_pence"] == 800
    # the winners of ANCHOR_X are eight enterprises: its row stays
    assert [w.anchor_id for w in result.won_from] == [ANCHOR_X]

    staff = impact.report(facts, Scope(), "cohort", shareable=False)
    assert all(g.figures.withheld == [] for g in staff.groups)


def test_shareable_report_withholds_totals_from_fewer_than_three_enterprises() -> None:
    a1, a2 = enterprise(COHORT_A), enterprise(COHORT_A)
    l1 = line(ANCHOR_X, 1_000)
    facts = Facts([a1, a2], [l1], [bid(a1, l1, "won", value=10), bid(a2, l1, "lost")], [])
    result = impact.report(facts, Scope(), None, shareable=True)
    assert result.totals.values["value_won_pence"] is None
    assert "win_rate" in result.totals.withheld
    assert result.totals.values["enterprises"] == 2  # not from bids: shown
    assert result.won_from == [] and result.withheld_won_from == 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([COHORT_A, COHORT_B, None]), st.sampled_from(["won", "lost", "submitted"])),
        max_size=12,
    )
)
def test_cohort_groups_add_up_to_the_totals(rows: list[tuple[uuid.UUID | None, str]]) -> None:
    l1 = line(ANCHOR_X, 1_000)
    people = [enterprise(cohort) for cohort, _ in rows]
    bids = [
        bid(e, l1, status, value=7 if status == "won" else None)
        for e, (_, status) in zip(people, rows, strict=True)
    ]
    facts = Facts(people, [l1], bids, [])
    result = impact.report(facts, Scope(), "cohort", shareable=False)
    for name in ("enterprises", "bids_submitted", "bids_won", "bids_lost", "value_won_pence"):
        assert sum(g.figures.values[name] for g in result.groups) == result.totals.values[name]


def test_a_shareable_report_with_no_bids_shows_its_zeros() -> None:
    facts = Facts([enterprise(COHORT_A)], [line(ANCHOR_X, 1_000)], [], [])
    totals = impact.report(facts, Scope(), None, shareable=True).totals
    assert totals.withheld == [] and totals.values["bids_submitted"] == 0 and totals.values["share_bid"] == 0
