"""The rules of bids: how a bid's status moves, what each status needs, and how a bid compares
with the award of its line (``award_check``).

Pure rules; ``service/bids.py`` asks these before changing anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from services.enterprises.vocabulary import AwardCheck, BidStatus

STATUSES: Final[tuple[BidStatus, ...]] = ("intended", "submitted", "won", "lost", "withdrawn")
START_STATUSES: Final = ("intended", "submitted")
FINAL_STATUSES: Final = frozenset({"won", "lost", "withdrawn"})
PARTNERED_ROLES: Final = frozenset({"consortium_member", "subcontractor"})

# intended -> submitted | withdrawn; submitted -> won | lost | withdrawn; the outcomes are final.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "intended": frozenset({"submitted", "withdrawn"}),
    "submitted": frozenset({"won", "lost", "withdrawn"}),
    "won": frozenset(),
    "lost": frozenset(),
    "withdrawn": frozenset(),
}
# Staff may correct a recorded outcome (the enterprise recorded the wrong one).
STAFF_CORRECTIONS: Final[dict[str, frozenset[str]]] = {
    "won": frozenset({"lost"}),
    "lost": frozenset({"won"}),
}


def status_change_allowed(role: str, current: str, target: str) -> bool:
    """Whether a caller of ``role`` may move a bid from ``current`` to ``target``."""
    if target in TRANSITIONS.get(current, frozenset()):
        return True
    return role == "staff" and target in STAFF_CORRECTIONS.get(current, frozenset())


def next_statuses(role: str, current: str) -> list[str]:
    return [s for s in STATUSES if status_change_allowed(role, current, s)]


def state_errors(
    role: str, partners: Sequence[str], status: str, contract_value_pence: int | None
) -> list[dict[str, str]]:
    """What is wrong with a bid as it would stand, by field (empty when nothing is)."""
    errors = []
    if role in PARTNERED_ROLES and not partners:
        errors.append(
            {
                "field": "partners",
                "message": f"a {role.replace('_', ' ')} bid names at least one partner",
            }
        )
    if status == "won" and contract_value_pence is None:
        errors.append({"field": "contract_value_pence", "message": "a won bid needs its contract value"})
    if status != "won" and contract_value_pence is not None:
        errors.append({"field": "contract_value_pence", "message": "only a won bid has a contract value"})
    return errors


def timestamps(
    before: str | None,
    after: str,
    submitted_at: datetime | None,
    decided_at: datetime | None,
    now: datetime,
) -> tuple[datetime | None, datetime | None]:
    """``(submitted_at, decided_at)`` after a bid moves from ``before`` (None: created) to ``after``:
    submitted when it first reached submitted, decided when it last reached a final status."""
    if before == after:
        return submitted_at, decided_at
    if after == "submitted" and submitted_at is None:
        submitted_at = now
    if after in FINAL_STATUSES:
        decided_at = now
    return submitted_at, decided_at


@dataclass(frozen=True)
class Award:
    """The award of a demand line: whom it names (None: a supplier not known here)."""

    enterprise_id: uuid.UUID | None


def award_check(status: str, enterprise_id: uuid.UUID, award: Award | None) -> AwardCheck | None:
    """How a bid stands against its line's award; None while the line has none.

    A function of the current state only, so events arriving late, twice or out of order give
    the same answer."""
    if award is None:
        return None
    if award.enterprise_id == enterprise_id:
        if status == "won":
            return "confirmed"
        if status in ("lost", "withdrawn"):
            return "disputed"
        return "awaiting_outcome"
    return "disputed" if status == "won" else "not_awarded"
