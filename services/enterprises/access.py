"""Who may do what with enterprises (docs/ACCESS.md), checked before any data is read.

Another tenant's enterprise answers 404 where its existence would leak (anchors, other
enterprises), 403 where the caller may know it exists but may not act (integrators, and
mentors on writes).
"""

from __future__ import annotations

import uuid

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
