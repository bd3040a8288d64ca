"""Who may do what with enterprises (docs/ACCESS.md), checked before any data is read.

Another tenant's enterprise answers 404 where its existence would leak (anchors, other
enterprises), 403 where the caller may know it exists but may not act (integrators, and
mentors on writes).
"""

from __future__ import annotations

import uuid
from typing import Any

from shared.principal import Principal
from shared.problems import forbidden, not_found


def _hidden(enterprise_id: uuid.UUID) -> Exception:
    return not_found("Enterprise", enterprise_id)


def can_read_enterprise(principal: Principal, enterprise_id: uuid.UUID) -> None:
    """``GET /enterprises/{id}``, ``/milestones``, ``/readiness``: staff, mentors, the enterprise itself."""
    if principal.role in ("staff", "mentor"):
        return
    if principal.role == "enterprise":
        if principal.owns("enterprise", enterprise_id):
            return
        raise _hidden(enterprise_id)
    if principal.role == "anchor":
        raise _hidden(enterprise_id)
    raise forbidden(f"A {principal.role} may not read enterprises.")


def can_read_history(principal: Principal, enterprise_id: uuid.UUID) -> None:
    """``GET /enterprises/{id}/history``: staff and the enterprise itself."""
    if principal.role == "staff" or principal.owns("enterprise", enterprise_id):
        return
    if principal.role in ("enterprise", "anchor"):
        raise _hidden(enterprise_id)
    raise forbidden(f"A {principal.role} may not read an enterprise's history.")


def can_update_enterprise(principal: Principal, enterprise_id: uuid.UUID, fields: set[str]) -> None:
    """``PATCH /enterprises/{id}``: staff all fields; the enterprise its profile, not stage or cohort."""
    if principal.role == "staff":
        return
    if principal.role == "enterprise":
        if not principal.owns("enterprise", enterprise_id):
            raise _hidden(enterprise_id)
        staff_only = sorted(fields & {"stage", "cohort_id"})
        if staff_only:
            raise forbidden(f"Only staff change {' and '.join(staff_only)}.")
        return
    if principal.role == "anchor":
        raise _hidden(enterprise_id)
    raise forbidden(f"A {principal.role} may not change enterprises.")


def can_change_milestone(principal: Principal, enterprise_id: uuid.UUID, target: str) -> None:
    """``PATCH /enterprises/{id}/milestones/{code}``: the enterprise works on and submits its own;
    staff and mentors verify or reject (staff may also act for the enterprise)."""
    if principal.role == "staff":
        return
    if principal.role == "enterprise":
        if not principal.owns("enterprise", enterprise_id):
            raise _hidden(enterprise_id)
        if target not in ("in_progress", "submitted"):
            raise forbidden("An enterprise moves its milestones to in_progress or submitted only.")
        return
    if principal.role == "mentor":
        if target not in ("verified", "rejected"):
            raise forbidden("A mentor verifies or rejects submitted milestones only.")
        return
    if principal.role == "anchor":
        raise _hidden(enterprise_id)
    raise forbidden(f"A {principal.role} may not change milestones.")


def can_read_catalogue(principal: Principal) -> None:
    """``GET /milestone-definitions``: anyone signed in."""
    if principal.role == "public":
        raise forbidden("Sign in to read the milestone catalogue.")


# --- bids ------------------------------------------------------------------------------------
# A bid is its enterprise's business: staff and the enterprise itself. The anchor whose line it
# is sees it once the line's award is known (to check the award against the bids); anyone else
# who might be an interested party (another enterprise, another anchor) gets 404.


def can_manage_bids_of(principal: Principal, enterprise_id: uuid.UUID) -> None:
    """``POST``, ``GET /enterprises/{id}/bids``: staff and the enterprise itself."""
    if principal.role == "staff" or principal.owns("enterprise", enterprise_id):
        return
    if principal.role in ("enterprise", "anchor"):
        raise _hidden(enterprise_id)
    raise forbidden(f"A {principal.role} may not see an enterprise's bids.")


def can_use_bids(principal: Principal) -> None:
    """``/bids``, ``/bids/{id}``: staff, enterprises and anchors (which of them, by the bid)."""
    if principal.role not in ("staff", "enterprise", "anchor"):
        raise forbidden(f"A {principal.role} may not see bids.")


def may_read_bid(principal: Principal, bid: Any) -> bool:
    """``bid``: a bid with its line's ``anchor_id`` and ``awarded``."""
    if principal.role == "staff" or principal.owns("enterprise", bid.enterprise_id):
        return True
    return bid.awarded is True and bid.anchor_id is not None and principal.owns("anchor", bid.anchor_id)


def require_bid_reader(principal: Principal, bid: Any, bid_id: uuid.UUID) -> Any:
    if bid is None or not may_read_bid(principal, bid):
        raise not_found("Bid", bid_id)
    return bid


def require_bid_editor(principal: Principal, bid: Any, bid_id: uuid.UUID) -> Any:
    """404 unless the caller may see the bid; 403 for an anchor that may see it but not change it."""
    bid = require_bid_reader(principal, bid, bid_id)
    if principal.role == "staff" or principal.owns("enterprise", bid.enterprise_id):
        return bid
    raise forbidden("Only the enterprise that bids, or staff, change a bid.")


def bid_list_scope(principal: Principal) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """``GET /bids``: the (enterprise, anchor) every list of the caller is narrowed to: an
    enterprise sees its own bids, an anchor those on its lines that have an award, staff all."""
    can_use_bids(principal)
    if principal.role == "enterprise":
        return uuid.UUID(str(principal.subject_id)), None
    if principal.role == "anchor":
        return None, uuid.UUID(str(principal.subject_id))
    return None, None


# Scopes only staff may narrow the impact report to: any narrower view beside a wider one could be
# differenced to single out one enterprise's bid.
IMPACT_NARROWING = ("start", "end", "cohort_id", "area", "anchor_id", "cpv_division")


def can_read_impact(principal: Principal, shareable: bool, narrowed_by: list[str]) -> None:
    """``GET /reports/impact``: staff any scope; anchors and integrators (funders, the pages) the
    shareable report of all enterprises over all time, in any one breakdown; nobody else."""
    if principal.role == "staff":
        return
    if principal.role not in ("anchor", "integrator"):
        raise forbidden(f"A {principal.role} may not read the impact report.")
    if not shareable:
        raise forbidden("Only staff read the full impact report; others may ask for shareable=true.")
    if narrowed_by:
        raise forbidden(
            f"Only staff narrow the impact report ({', '.join(narrowed_by)}): the shareable report is "
            "of all enterprises over all time."
        )
