"""The rules of bids on their own: status moves, what each status needs, and the award check."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.enterprises.bidding import (
    STATUSES,
    Award,
    award_check,
    next_statuses,
    state_errors,
    status_change_allowed,
    timestamps,
)
from services.enterprises.identifiers import registration_number_spellings

LEGAL = [
    ("intended", "submitted"),
    ("intended", "withdrawn"),
    ("submitted", "won"),
    ("submitted", "lost"),
    ("submitted", "withdrawn"),
]


@pytest.mark.parametrize(("current", "target"), LEGAL)
@pytest.mark.parametrize("role", ["enterprise", "staff"])
def test_a_bid_moves_from_intended_to_submitted_to_an_outcome(role: str, current: str, target: str) -> None:
    assert status_change_allowed(role, current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(c, t) for c in STATUSES for t in STATUSES if c != t and (c, t) not in LEGAL],
)
def test_every_other_move_is_refused_to_the_enterprise(current: str, target: str) -> None:
    assert not status_change_allowed("enterprise", current, target)


def test_outcomes_are_final_but_staff_may_correct_won_and_lost() -> None:
    for final in ("won", "lost", "withdrawn"):
        assert next_statuses("enterprise", final) == []
    assert next_statuses("staff", "won") == ["lost"]
    assert next_statuses("staff", "lost") == ["won"]
    assert next_statuses("staff", "withdrawn") == []
    assert not status_change_allowed("staff", "won", "submitted")


def test_next_statuses_lists_the_allowed_moves_in_workflow_order() -> None:
    assert next_statuses("enterprise", "intended") == ["submitted", "withdrawn"]
    assert next_statuses("enterprise", "submitted") == ["won", "lost", "withdrawn"]


def test_a_consortium_or_subcontract_names_a_partner() -> None:
    assert state_errors("consortium_member", [], "intended", None)[0]["field"] == "partners"
    assert state_errors("subcontractor", [], "intended", None)[0]["field"] == "partners"
    assert state_errors("subcontractor", ["Leeds Build Ltd"], "intended", None) == []
    assert state_errors("lead", [], "intended", None) == []


def test_only_a_won_bid_has_a_contract_value_and_it_must() -> None:
    assert state_errors("lead", [], "won", None) == [
        {"field": "contract_value_pence", "message": "a won bid needs its contract value"}
    ]
    assert state_errors("lead", [], "won", 0) == []
    assert state_errors("lead", [], "lost", 100)[0]["field"] == "contract_value_pence"


def test_submitted_at_is_the_first_submission_and_decided_at_the_last_outcome() -> None:
    t0 = datetime(2027, 1, 4, tzinfo=UTC)
    t1, t2 = t0 + timedelta(days=1), t0 + timedelta(days=2)
    assert timestamps(None, "intended", None, None, t0) == (None, None)
    assert timestamps(None, "submitted", None, None, t0) == (t0, None)
    assert timestamps("submitted", "won", t0, None, t1) == (t0, t1)
    assert timestamps("won", "lost", t0, t1, t2) == (t0, t2)  # a correction
    assert timestamps("won", "won", t0, t1, t2) == (t0, t1)  # no move, no new time
    assert timestamps("intended", "withdrawn", None, None, t1) == (None, t1)


ME, OTHER = uuid.uuid4(), uuid.uuid4()


@pytest.mark.parametrize(
    ("status", "awarded_to", "expected"),
    [
        ("won", ME, "confirmed"),
        ("submitted", ME, "awaiting_outcome"),
        ("intended", ME, "awaiting_outcome"),
        ("lost", ME, "disputed"),
        ("withdrawn", ME, "disputed"),
        ("won", OTHER, "disputed"),
        ("won", None, "disputed"),
        ("lost", OTHER, "not_awarded"),
        ("submitted", OTHER, "not_awarded"),
        ("intended", None, "not_awarded"),
    ],
)
def test_award_check_compares_the_bid_with_whom_the_award_names(
    status: str, awarded_to: uuid.UUID | None, expected: str
) -> None:
    assert award_check(status, ME, Award(awarded_to)) == expected


@pytest.mark.parametrize("status", STATUSES)
def test_no_award_no_check(status: str) -> None:
    assert award_check(status, ME, None) is None


def test_a_register_number_without_its_legal_form_has_each_plausible_spelling() -> None:
    assert registration_number_spellings(" 1234567 ") == {"01234567", "1234567"}
    assert registration_number_spellings("sc123456") >= {"SC123456"}
    assert registration_number_spellings("") == set()
    assert registration_number_spellings(None) == set()
