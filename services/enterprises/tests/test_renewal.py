"""The milestone workflow with early renewal, as pure rules (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.enterprises import events as ev
from services.enterprises.actors import Actor
from services.enterprises.models import STANDING_FIELDS
from services.enterprises.renewal import NO_STANDING, Terms, has_standing, plan_change, submitted_by
from services.enterprises.schemas import Evidence, MilestoneUpdate
from shared.problems import Problem

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
ENTERPRISE = Actor("enterprise", "key:e1", "e1")
STAFF = Actor("staff", "key:s1")
MENTOR = Actor("mentor", "key:m1", "m1")
EVIDENCE = Evidence(reference="POL-1")


def stored(status: str, **columns: Any) -> dict[str, Any]:
    """A stored milestone row: nothing set but ``status`` and ``columns``."""
    row: dict[str, Any] = {
        name: None
        for name in (
            "evidence",
            "value_pence",
            "expires_at",
            "note",
            "submitted_at",
            "submitted_by_role",
            "submitted_by_actor",
            "submitted_by_subject",
            "verified_at",
            "verified_by_role",
            "verified_by_actor",
            "verified_by_subject",
        )
    }
    row.update({f"standing_{name}": None for name in STANDING_FIELDS})
    row.update(status=status, version=3, expiry_warned=False, standing_expiry_warned=False)
    return row | columns


def verified(expires_at: datetime | None) -> dict[str, Any]:
    return stored(
        "verified",
        evidence={"reference": "OLD"},
        value_pence=500,
        expires_at=expires_at,
        submitted_by_role="enterprise",
        submitted_by_actor="key:e1",
        submitted_by_subject="e1",
        verified_at=NOW - timedelta(days=100),
        verified_by_role="staff",
        verified_by_actor="key:s1",
        expiry_warned=True,
    )


def test_first_submission_needs_evidence_and_records_the_submitter() -> None:
    with pytest.raises(Problem) as refused:
        plan_change("policy", None, MilestoneUpdate(status="submitted"), ENTERPRISE, Terms(), now=NOW)
    assert refused.value.status == 422
    change = plan_change(
        "policy", None, MilestoneUpdate(status="submitted", evidence=EVIDENCE), ENTERPRISE, Terms(), now=NOW
    )
    assert change.values["status"] == "submitted"
    assert change.values["submitted_by_actor"] == "key:e1"
    assert change.values["version"] == 1
    assert change.action is None and change.event_type is None


def test_a_thresholded_milestone_needs_its_evidenced_value() -> None:
    update = MilestoneUpdate(status="submitted", evidence=EVIDENCE)
    with pytest.raises(Problem) as refused:
        plan_change("insurance", None, update, ENTERPRISE, Terms(threshold_pence=100), now=NOW)
    assert refused.value.status == 422


def test_a_move_the_role_may_not_make_is_a_conflict() -> None:
    with pytest.raises(Problem) as refused:
        plan_change("policy", None, MilestoneUpdate(status="verified"), STAFF, Terms(), now=NOW)
    assert refused.value.status == 409


def test_nobody_verifies_their_own_submission() -> None:
    row = stored(
        "submitted", evidence={"reference": "X"}, submitted_by_role="staff", submitted_by_actor="key:s1"
    )
    assert submitted_by(row, STAFF)
    with pytest.raises(Problem) as refused:
        plan_change("policy", row, MilestoneUpdate(status="verified"), STAFF, Terms(), now=NOW)
    assert refused.value.status == 403


def test_verifying_without_an_expiry_takes_the_validity_period() -> None:
    row = stored(
        "submitted", evidence={"reference": "X"}, submitted_by_role="enterprise", submitted_by_actor="k"
    )
    change = plan_change(
        "policy", row, MilestoneUpdate(status="verified"), MENTOR, Terms(validity_days=365), now=NOW
    )
    assert change.values["expires_at"] == NOW + timedelta(days=365)
    assert change.values["verified_by_role"] == "mentor"
    assert change.values["version"] == 4


def test_resubmitting_an_unexpired_verification_keeps_it_standing() -> None:
    row = verified(NOW + timedelta(days=10))
    update = MilestoneUpdate(status="submitted", evidence=Evidence(reference="NEW"), value_pence=900)
    change = plan_change("insurance", row, update, ENTERPRISE, Terms(threshold_pence=100), now=NOW)
    values = change.values
    assert change.action == "milestone_renewal_submitted"
    assert values["standing_verified_at"] == row["verified_at"]
    assert values["standing_value_pence"] == 500
    assert values["standing_expires_at"] == row["expires_at"]
    assert values["standing_expiry_warned"] is True
    assert values["evidence"] == {"reference": "NEW"} and values["value_pence"] == 900
    assert values["expires_at"] is None and values["verified_at"] is None


def test_a_renewal_needs_new_evidence() -> None:
    with pytest.raises(Problem) as refused:
        plan_change(
            "policy",
            verified(NOW + timedelta(days=10)),
            MilestoneUpdate(status="submitted"),
            ENTERPRISE,
            Terms(),
            now=NOW,
        )
    assert refused.value.status == 422
    assert "renewal" in str(refused.value.errors)


def test_resubmitting_a_lapsed_verification_is_no_renewal() -> None:
    row = verified(NOW - timedelta(days=1))
    update = MilestoneUpdate(status="submitted", evidence=EVIDENCE)
    change = plan_change("policy", row, update, ENTERPRISE, Terms(), now=NOW)
    assert change.action is None
    assert "standing_verified_at" not in change.values
    assert change.values["expires_at"] is None  # the new evidence does not inherit the lapsed expiry


def renewal_pending() -> dict[str, Any]:
    row = verified(NOW + timedelta(days=10))
    update = MilestoneUpdate(status="submitted", evidence=Evidence(reference="NEW"))
    return row | plan_change("policy", row, update, ENTERPRISE, Terms(), now=NOW).values


def test_verifying_a_renewal_drops_the_standing_verification() -> None:
    row = renewal_pending()
    assert has_standing(row)
    update = MilestoneUpdate(status="verified", expires_at=NOW + timedelta(days=400))
    change = plan_change("policy", row, update, STAFF, Terms(), now=NOW)
    assert {k: change.values[k] for k in NO_STANDING} == NO_STANDING
    assert change.values["status"] == "verified" and change.action is None


def test_rejecting_a_renewal_goes_back_to_the_standing_verification() -> None:
    row = renewal_pending()
    change = plan_change(
        "policy", row, MilestoneUpdate(status="rejected", note="unreadable"), STAFF, Terms(), now=NOW
    )
    values = change.values
    assert values["status"] == "verified"
    assert values["evidence"] == {"reference": "OLD"} and values["value_pence"] == 500
    assert values["expires_at"] == NOW + timedelta(days=10)
    assert values["verified_by_actor"] == "key:s1"
    assert values["standing_verified_at"] is None
    assert values["expiry_warned"] is True
    assert (change.action, change.event_type) == ("milestone_renewal_rejected", ev.MILESTONE_REJECTED)


def test_rejecting_needs_a_reason() -> None:
    row = stored("submitted", evidence={"reference": "X"})
    with pytest.raises(Problem) as refused:
        plan_change("policy", row, MilestoneUpdate(status="rejected"), STAFF, Terms(), now=NOW)
    assert refused.value.status == 422
