"""The stage and milestone state machines, on their own."""

from __future__ import annotations

import pytest

from services.enterprises.lifecycle import (
    STAGES,
    STATUSES,
    allowed_moves,
    milestone_move_allowed,
    stage_change_allowed,
)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("applicant", "incubating"),
        ("incubating", "tender_ready"),
        ("tender_ready", "graduated"),
        ("tender_ready", "incubating"),
    ],
)
def test_stages_move_forward_one_step(current: str, target: str) -> None:
    assert stage_change_allowed(current, target)


@pytest.mark.parametrize("current", [s for s in STAGES if s != "withdrawn"])
def test_withdrawn_is_reachable_from_every_stage(current: str) -> None:
    assert stage_change_allowed(current, "withdrawn")


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("applicant", "tender_ready"),
        ("applicant", "graduated"),
        ("incubating", "applicant"),
        ("incubating", "graduated"),
        ("graduated", "tender_ready"),
        ("withdrawn", "applicant"),
        ("withdrawn", "incubating"),
    ],
)
def test_stages_cannot_be_skipped_or_undone(current: str, target: str) -> None:
    assert not stage_change_allowed(current, target)


@pytest.mark.parametrize(
    ("role", "current", "target"),
    [
        ("enterprise", "not_started", "in_progress"),
        ("enterprise", "in_progress", "submitted"),
        ("enterprise", "rejected", "submitted"),
        ("enterprise", "expired", "in_progress"),
        ("enterprise", "verified", "submitted"),
        ("staff", "submitted", "verified"),
        ("mentor", "submitted", "rejected"),
        ("staff", "verified", "rejected"),
        ("staff", "not_started", "submitted"),
    ],
)
def test_allowed_milestone_moves(role: str, current: str, target: str) -> None:
    assert milestone_move_allowed(role, current, target)


@pytest.mark.parametrize(
    ("role", "current", "target"),
    [
        ("enterprise", "submitted", "verified"),
        ("enterprise", "submitted", "rejected"),
        ("mentor", "not_started", "submitted"),
        ("mentor", "verified", "rejected"),
        ("staff", "in_progress", "verified"),
        ("staff", "not_started", "verified"),
        ("staff", "rejected", "verified"),
        ("staff", "expired", "verified"),
        ("anchor", "submitted", "verified"),
        ("integrator", "not_started", "in_progress"),
    ],
)
def test_forbidden_milestone_moves(role: str, current: str, target: str) -> None:
    assert not milestone_move_allowed(role, current, target)


@pytest.mark.parametrize("role", ["staff", "mentor", "enterprise"])
@pytest.mark.parametrize("current", STATUSES)
def test_nobody_moves_a_milestone_to_expired_or_back_to_not_started(role: str, current: str) -> None:
    assert "expired" not in allowed_moves(role, current)
    assert "not_started" not in allowed_moves(role, current)
    assert not milestone_move_allowed(role, current, "expired")
