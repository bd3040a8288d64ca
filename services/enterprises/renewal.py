"""What one change of an enterprise milestone writes: the status workflow with early renewal.

Pure rules, no I/O. ``lifecycle.py`` says which moves a role may make; this module works out
the columns a move sets, including early renewal: a verified, unexpired milestone that is
submitted again keeps its verification *standing* (the ``standing_*`` columns) until the
renewal is verified (the standing one is dropped), rejected (the milestone goes back to the
standing one) or the standing one lapses (the expiry job drops it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.enterprises import events as ev
from services.enterprises import lifecycle
from services.enterprises.actors import Actor
from services.enterprises.models import STANDING_FIELDS
from services.enterprises.schemas import MilestoneUpdate
from shared.problems import Problem, field_errors, forbidden

NO_STANDING: dict[str, Any] = {f"standing_{name}": None for name in STANDING_FIELDS} | {
    "standing_expiry_warned": False
}
"""The columns that clear a standing verification."""

_NO_VERIFIER = {
    "verified_at": None,
    "verified_by_role": None,
    "verified_by_actor": None,
    "verified_by_subject": None,
}


@dataclass(frozen=True)
class Terms:
    """What the catalogue says about the milestone."""

    threshold_pence: int | None = None
    validity_days: int | None = None


@dataclass(frozen=True)
class Change:
    """The columns to write (``version`` included), and how the change is recorded when it is
    not the plain ``milestone_<status>`` with the event of its status."""

    values: dict[str, Any]
    action: str | None = None
    event_type: str | None = None


def has_standing(row: Mapping[str, Any] | None) -> bool:
    """Whether a verification stands while a renewal of the milestone awaits review."""
    return row is not None and row["standing_verified_at"] is not None


def submitted_by(row: Mapping[str, Any] | None, actor: Actor) -> bool:
    """Whether ``actor`` is who submitted the current evidence (the four-eyes rule)."""
    if row is None or row["submitted_by_actor"] is None:
        return False
    if row["submitted_by_actor"] == actor.actor and row["submitted_by_role"] == actor.role:
        return True
    return (
        actor.subject_id is not None
        and row["submitted_by_role"] == actor.role
        and row["submitted_by_subject"] == actor.subject_id
    )


def plan_change(
    code: str,
    row: Mapping[str, Any] | None,
    update: MilestoneUpdate,
    actor: Actor,
    terms: Terms,
    *,
    now: datetime,
) -> Change:
    """The change that moves milestone ``code`` (``row``: its stored columns, None when never
    touched) to ``update.status`` for ``actor``; 403, 409 or 422 when it is not allowed."""
    current = row["status"] if row else "not_started"
    version = row["version"] if row else 0
    target = update.status
    if not lifecycle.milestone_move_allowed(actor.role, current, target):
        raise Problem(
            409,
            "Milestone transition not allowed",
            f"A {actor.role} cannot move {code} from {current} to {target}.",
            type="milestone-transition",
            current_status=current,
            allowed=lifecycle.allowed_moves(actor.role, current),
        )
    values: dict[str, Any] = {"status": target, "updated_at": now}
    action: str | None = None
    event_type: str | None = None
    errors: list[dict[str, str]] = []
    if update.expires_at is not None and update.expires_at <= now:
        errors.append({"field": "expires_at", "message": "must be in the future"})
    renewing = (
        target == "submitted"
        and row is not None
        and current == "verified"
        and (row["expires_at"] is None or row["expires_at"] > now)
    )
    if renewing and row is not None:
        # An early renewal: the verification stands until the renewal is reviewed or it lapses,
        # and the renewal inherits none of it (new evidence, value and expiry).
        values.update({f"standing_{name}": row[name] for name in STANDING_FIELDS})
        values.update(
            standing_expiry_warned=row["expiry_warned"],
            evidence=None,
            value_pence=None,
            expires_at=None,
            note=None,
        )
        action = "milestone_renewal_submitted"
    elif target in ("verified", "rejected") and has_standing(row):
        values.update(NO_STANDING)
    if target in ("in_progress", "submitted"):
        if update.evidence is not None:
            values["evidence"] = update.evidence.model_dump(mode="json", exclude_none=True)
        if "value_pence" in update.model_fields_set:
            values["value_pence"] = update.value_pence
        if "expires_at" in update.model_fields_set:
            values["expires_at"] = update.expires_at
        elif (
            not renewing
            and row is not None
            and (row["status"] == "expired" or (row["expires_at"] is not None and row["expires_at"] <= now))
        ):
            values["expires_at"] = None  # new evidence does not inherit a lapsed expiry
        if update.note is not None:
            values["note"] = update.note
    if target == "submitted":
        evidence = values.get("evidence", row["evidence"] if row else None)
        if not evidence:
            message = (
                "a renewal needs its new evidence: a reference or a url"
                if renewing
                else "submitting needs evidence: a reference or a url"
            )
            errors.append({"field": "evidence", "message": message})
        value = values.get("value_pence", row["value_pence"] if row else None)
        if terms.threshold_pence is not None and value is None:
            errors.append(
                {"field": "value_pence", "message": f"{code} needs the evidenced amount (value_pence)"}
            )
        values.update(
            submitted_at=now,
            submitted_by_role=actor.role,
            submitted_by_actor=actor.actor,
            submitted_by_subject=actor.subject_id,
            expiry_warned=False,
            **_NO_VERIFIER,
        )
    elif target == "verified":
        if submitted_by(row, actor):
            raise forbidden("Nobody verifies their own submission; another reviewer must verify it.")
        if "value_pence" in update.model_fields_set:
            values["value_pence"] = update.value_pence
        expires_at = update.expires_at or (row["expires_at"] if row else None)
        if expires_at is None and terms.validity_days:
            expires_at = now + timedelta(days=terms.validity_days)
        if expires_at is not None and expires_at <= now and update.expires_at is None:
            errors.append(
                {"field": "expires_at", "message": "the submitted evidence has lapsed; give a new expiry"}
            )
        values.update(
            expires_at=expires_at,
            note=update.note,
            verified_at=now,
            verified_by_role=actor.role,
            verified_by_actor=actor.actor,
            verified_by_subject=actor.subject_id,
            expiry_warned=False,
        )
    elif target == "rejected":
        if not update.note:
            errors.append({"field": "note", "message": "say why it is rejected"})
        values.update(note=update.note, **_NO_VERIFIER)
        if row is not None and has_standing(row):
            # A rejected renewal: the milestone goes back to the verification that still stands
            # (if that has lapsed meanwhile, the expiry job expires it as any verified one).
            values.update({name: row[f"standing_{name}"] for name in STANDING_FIELDS})
            values.update(status="verified", expiry_warned=row["standing_expiry_warned"])
            action, event_type = "milestone_renewal_rejected", ev.MILESTONE_REJECTED
    if errors:
        raise field_errors(errors)
    values["version"] = version + 1
    return Change(values, action, event_type)
