"""The two state machines: an enterprise's stage and an enterprise milestone's status.

Pure rules; the use cases in ``service/`` ask these before changing anything.
"""

from __future__ import annotations

from typing import Final

from services.enterprises.vocabulary import MilestoneStatus, StageName

STAGES: Final[tuple[StageName, ...]] = ("applicant", "incubating", "tender_ready", "graduated", "withdrawn")

# applicant -> incubating -> tender_ready -> graduated; withdrawn from any stage. A tender-ready
# enterprise whose cover lapsed can be taken back to incubating.
STAGE_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "applicant": frozenset({"incubating", "withdrawn"}),
    "incubating": frozenset({"tender_ready", "withdrawn"}),
    "tender_ready": frozenset({"graduated", "incubating", "withdrawn"}),
    "graduated": frozenset({"withdrawn"}),
    "withdrawn": frozenset(),
}


def stage_change_allowed(current: str, target: str) -> bool:
    return target in STAGE_TRANSITIONS.get(current, frozenset())


def next_stages(current: str) -> list[str]:
    return sorted(STAGE_TRANSITIONS.get(current, frozenset()))


STATUSES: Final[tuple[MilestoneStatus, ...]] = (
    "not_started",
    "in_progress",
    "submitted",
    "verified",
    "rejected",
    "expired",
)
# What a PATCH may ask for; "expired" is the expiry job's and "not_started" nobody's.
REQUESTABLE: Final = ("in_progress", "submitted", "verified", "rejected")

# Who moves a milestone where. The enterprise works on it and submits evidence (again after a
# rejection or an expiry, or early to renew a verified one); a reviewer (staff or mentor)
# verifies or rejects a submission, and staff may revoke a verification.
ENTERPRISE_MOVES: Final[dict[str, frozenset[str]]] = {
    "not_started": frozenset({"in_progress", "submitted"}),
    "in_progress": frozenset({"submitted"}),
    "submitted": frozenset({"in_progress", "submitted"}),
    "rejected": frozenset({"in_progress", "submitted"}),
    "expired": frozenset({"in_progress", "submitted"}),
    "verified": frozenset({"submitted"}),
}
REVIEWER_MOVES: Final[dict[str, frozenset[str]]] = {
    "submitted": frozenset({"verified", "rejected"}),
}
STAFF_ONLY_MOVES: Final[dict[str, frozenset[str]]] = {
    "verified": frozenset({"rejected"}),
}


def milestone_move_allowed(role: str, current: str, target: str) -> bool:
    """Whether ``role`` may move a milestone from ``current`` to ``target``.

    Staff may also submit on an enterprise's behalf (evidence sent by post or email).
    """
    if target in ENTERPRISE_MOVES.get(current, frozenset()) and role in ("enterprise", "staff"):
        return True
    if target in REVIEWER_MOVES.get(current, frozenset()) and role in ("staff", "mentor"):
        return True
    return target in STAFF_ONLY_MOVES.get(current, frozenset()) and role == "staff"


def allowed_moves(role: str, current: str) -> list[str]:
    return [t for t in REQUESTABLE if milestone_move_allowed(role, current, t)]
