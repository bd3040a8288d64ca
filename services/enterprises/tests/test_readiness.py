"""Readiness is a pure function: its properties hold for any facts, milestones and requirements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.enterprises.readiness import (
    Definition,
    Facts,
    MilestoneState,
    Requirement,
    Standing,
    applies,
    assess,
    overall_requirements,
    rule_errors,
    verification_in_force,
)

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
WARNING = timedelta(days=30)
CODES = [f"code_{n}" for n in range(8)]
STATUSES = ["not_started", "in_progress", "submitted", "verified", "rejected", "expired"]

expiries = st.one_of(
    st.none(),
    st.integers(min_value=-400, max_value=800).map(lambda days: NOW + timedelta(days=days)),
)
values = st.one_of(st.none(), st.integers(min_value=0, max_value=2_000_000_000))
standings = st.builds(Standing, expires_at=expiries, value_pence=values)


@st.composite
def milestone(draw: st.DrawFn) -> MilestoneState:
    """Any milestone; one that is being worked on again may hold a standing verification."""
    status = draw(st.sampled_from(STATUSES))
    standing = draw(st.one_of(st.none(), standings)) if status in ("in_progress", "submitted") else None
    return MilestoneState(
        draw(st.sampled_from(CODES)), status, draw(expiries), draw(values), standing=standing
    )


milestone = milestone()
milestones = st.lists(milestone, max_size=8, unique_by=lambda m: m.code)
requirement = st.builds(Requirement, code=st.sampled_from(CODES), min_value_pence=values)
requirements = st.lists(requirement, max_size=8)

PROPERTY = settings(max_examples=150, deadline=None)


@PROPERTY
@given(milestones, requirements)
def test_score_is_between_zero_and_one_and_ready_iff_nothing_missing(ms, reqs) -> None:
    result = assess(ms, reqs, now=NOW, warning=WARNING)
    assert 0.0 <= result.score <= 1.0
    assert result.ready == (result.missing == ())
    assert result.ready == (result.score == 1.0)
    assert set(result.missing) <= {r.code for r in reqs}
    assert len(result.missing) == len(set(result.missing))
    assert [g.code for g in result.gaps] == list(result.missing)


@PROPERTY
@given(milestones, requirements, st.sampled_from(CODES), expiries, values)
def test_adding_a_verified_unexpired_milestone_never_lowers_the_score(
    ms, reqs, code, expires_at, value
) -> None:
    if expires_at is not None and expires_at <= NOW:
        expires_at = NOW + timedelta(days=1)
    # Adding: the code had no standing verification (replacing one with less cover is not adding).
    assume(not any(m.code == code and verification_in_force(m, NOW) is not None for m in ms))
    before = assess(ms, reqs, now=NOW, warning=WARNING)
    others = [m for m in ms if m.code != code]
    after = assess(
        [*others, MilestoneState(code, "verified", expires_at, value)], reqs, now=NOW, warning=WARNING
    )
    assert after.score >= before.score
    assert set(after.missing) - set(before.missing) == set()


@PROPERTY
@given(milestones, requirements)
def test_an_expired_verification_counts_as_missing(ms, reqs) -> None:
    lapsed = [
        MilestoneState(m.code, "verified", NOW - timedelta(seconds=1), m.value_pence, standing=m.standing)
        for m in ms
        if m.standing is None
    ]
    result = assess(lapsed, reqs, now=NOW, warning=WARNING)
    assert set(result.missing) == {r.code for r in reqs}
    assert result.verified == ()
    assert all(g.reason == "expired" for g in result.gaps if g.code in {m.code for m in lapsed})


def resubmitted(m: MilestoneState, expires_at: datetime | None, value: int | None) -> MilestoneState:
    """``m`` (verified) resubmitted early: the renewal is pending, the verification stands."""
    return MilestoneState(
        m.code, "submitted", expires_at, value, standing=Standing(m.expires_at, m.value_pence)
    )


def comparable(result):  # what consumers of readiness see, apart from the renewal flag
    verified = [(v.code, v.expires_at, v.value_pence) for v in result.verified]
    return result.score, result.ready, result.missing, result.expiring_soon, verified, result.gaps


future = st.one_of(
    st.none(), st.integers(min_value=1, max_value=800 * 24).map(lambda hours: NOW + timedelta(hours=hours))
)


@PROPERTY
@given(
    milestones,
    requirements,
    st.sampled_from(CODES),
    future,
    values,
    expiries,
    values,
    st.integers(min_value=0, max_value=1200).map(lambda hours: timedelta(hours=hours)),
)
def test_resubmitting_a_verified_milestone_never_lowers_readiness_before_its_expiry(
    ms, reqs, code, expires_at, value, renewal_expiry, renewal_value, later
) -> None:
    target = MilestoneState(code, "verified", expires_at, value)
    others = [m for m in ms if m.code != code]
    at = NOW + later
    assume(expires_at is None or at < expires_at)
    before = assess([*others, target], reqs, now=at, warning=WARNING)
    after = assess(
        [*others, resubmitted(target, renewal_expiry, renewal_value)], reqs, now=at, warning=WARNING
    )
    assert comparable(after) == comparable(before)
    pending = {v.code for v in before.verified if v.renewal_pending}
    assert {v.code for v in after.verified if v.renewal_pending} == pending | {code}


@PROPERTY
@given(milestones, requirements, st.sampled_from(CODES), future, values, expiries, values)
def test_a_standing_verification_lapses_at_its_own_expiry(
    ms, reqs, code, expires_at, value, renewal_expiry, renewal_value
) -> None:
    expires_at = expires_at or NOW + timedelta(days=1)
    renewed = MilestoneState(code, "verified", expires_at, value)
    ms = [*(m for m in ms if m.code != code), resubmitted(renewed, renewal_expiry, renewal_value)]
    result = assess(ms, [*reqs, Requirement(code)], now=expires_at, warning=WARNING)
    assert code in result.missing
    assert code not in {v.code for v in result.verified}
    assert next(g for g in result.gaps if g.code == code).reason == "submitted"


def test_a_standing_verification_counts_with_its_own_value_and_shows_as_expiring() -> None:
    m = MilestoneState(
        "public_liability_insurance",
        "submitted",
        NOW + timedelta(days=400),
        100,
        standing=Standing(NOW + timedelta(days=10), 500_000_000),
    )
    result = assess([m], [Requirement("public_liability_insurance", 500_000_000)], now=NOW, warning=WARNING)
    assert result.ready
    assert result.expiring_soon == ("public_liability_insurance",)
    assert result.verified[0].expires_at == NOW + timedelta(days=10)
    assert result.verified[0].renewal_pending
    short = assess([m], [Requirement("public_liability_insurance", 600_000_000)], now=NOW, warning=WARNING)
    assert short.gaps[0].reason == "below_threshold" and short.gaps[0].value_pence == 500_000_000


@PROPERTY
@given(requirements, st.integers(min_value=0, max_value=2_000_000_000))
def test_a_verified_value_below_the_threshold_is_missing(reqs, value) -> None:
    ms = [MilestoneState(code, "verified", None, value) for code in CODES]
    result = assess(ms, reqs, now=NOW, warning=WARNING)
    for code in {r.code for r in reqs}:
        highest = max(
            (r.min_value_pence for r in reqs if r.code == code and r.min_value_pence is not None),
            default=None,
        )
        assert (code in result.missing) == (highest is not None and value < highest)


@PROPERTY
@given(milestones, requirements)
def test_expiring_soon_lists_verified_codes_inside_the_warning_window_only(ms, reqs) -> None:
    result = assess(ms, reqs, now=NOW, warning=WARNING)
    verified = {v.code: v for v in result.verified}
    assert set(result.expiring_soon) <= set(verified)
    for code, v in verified.items():
        inside = v.expires_at is not None and NOW < v.expires_at <= NOW + WARNING
        assert (code in result.expiring_soon) == inside


@PROPERTY
@given(milestones)
def test_nothing_required_means_ready(ms) -> None:
    result = assess(ms, [], now=NOW, warning=WARNING)
    assert result.ready and result.score == 1.0


def test_score_is_the_share_of_requirements_met() -> None:
    ms = [
        MilestoneState("legal_entity", "verified"),
        MilestoneState("public_liability_insurance", "verified", NOW + timedelta(days=10), 500_000_000),
        MilestoneState("case_studies", "submitted"),
    ]
    reqs = [
        Requirement("legal_entity"),
        Requirement("public_liability_insurance", 1_000_000_000),
        Requirement("case_studies"),
        Requirement("social_value_offer"),
    ]
    result = assess(ms, reqs, now=NOW, warning=WARNING)
    assert result.score == 0.25
    assert result.missing == ("public_liability_insurance", "case_studies", "social_value_offer")
    assert [g.reason for g in result.gaps] == ["below_threshold", "submitted", "not_started"]
    assert result.expiring_soon == ("public_liability_insurance",)


# --- rules -----------------------------------------------------------------------------------

SMALL = Facts(employees=3, turnover_pence=18_000_000, cpv_codes=("90910000-9",), vcse=True)


@pytest.mark.parametrize(
    ("rule", "facts", "expected"),
    [
        ({"always": True}, SMALL, True),
        ({"always": False}, SMALL, False),
        ({"employees_gte": 5}, SMALL, False),
        ({"employees_gte": 3}, SMALL, True),
        ({"employees_gte": 1}, Facts(employees=None), False),
        ({"turnover_pence_gte": 3_600_000_000}, Facts(turnover_pence=3_600_000_000), True),
        ({"max_contract_value_pence_gte": 500_000_000}, Facts(max_contract_value_pence=None), False),
        ({"handles_personal_data": True}, Facts(handles_personal_data=True), True),
        ({"works_with_public": True}, SMALL, False),
        ({"cpv_division_in": ["72", "90"]}, SMALL, True),
        ({"legal_form_in": ["cio", "charity"]}, Facts(legal_form="charity"), True),
        ({"size_class_in": ["medium"]}, SMALL, False),
        ({"any": [{"handles_personal_data": True}, {"cpv_division_in": ["90"]}]}, SMALL, True),
        ({"all": [{"vcse": True}, {"employees_gte": 10}]}, SMALL, False),
        ({"not": {"vcse": True}}, SMALL, False),
    ],
)
def test_rules_are_evaluated_on_the_enterprise_facts(rule, facts, expected) -> None:
    assert rule_errors(rule) == []
    assert applies(rule, facts) is expected


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({}, "applies_when"),
        ({"always": True, "vcse": True}, "applies_when"),
        ({"always": "yes"}, "applies_when.always"),
        ({"employees_gte": -1}, "applies_when.employees_gte"),
        ({"employees_gte": True}, "applies_when.employees_gte"),
        ({"turnover_pence_gte": 1.5}, "applies_when.turnover_pence_gte"),
        ({"cpv_division_in": ["12"]}, "applies_when.cpv_division_in"),
        ({"legal_form_in": []}, "applies_when.legal_form_in"),
        ({"any": [{"always": True}, {"moon_phase": "full"}]}, "applies_when.any.1.moon_phase"),
        (
            {"not": {"not": {"not": {"not": {"not": {"not": {"not": {"always": True}}}}}}}},
            "applies_when.not.not.not.not.not.not.not",
        ),
        ("always", "applies_when"),
    ],
)
def test_invalid_rules_are_refused_naming_the_bad_part(rule, field) -> None:
    errors = rule_errors(rule)
    assert errors, rule
    assert errors[0]["field"] == field


def test_overall_requirements_keep_core_definitions_that_apply() -> None:
    definitions = [
        Definition("legal_entity", {"always": True}),
        Definition("health_safety_policy", {"employees_gte": 5}),
        Definition("employers_liability_insurance", {"employees_gte": 1}, 500_000_000),
        Definition("iso_certifications", {"always": True}, core=False),
    ]
    assert overall_requirements(SMALL, definitions) == [
        Requirement("legal_entity"),
        Requirement("employers_liability_insurance", 500_000_000),
    ]
