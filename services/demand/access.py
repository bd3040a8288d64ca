"""Who may do what to which object in the demand service (``docs/ACCESS.md``).

Answer 404 when the caller may not know the object exists (another anchor's draft
or aggregate-only line, an enterprise that is not the caller's), and 403 when the
object is visible to the caller but the action is not theirs (another anchor's
public line, an integrator asking for matches).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from services.demand.models import demand_lines
from shared.principal import Principal
from shared.problems import field_errors, forbidden, not_found


def can_see(principal: Principal, line: dict[str, Any]) -> bool:
    """Staff all; its anchor all of its own; everyone else public non-draft lines."""
    if principal.is_staff or principal.owns("anchor", line["anchor_id"]):
        return True
    return line["visibility"] == "public" and line["status"] != "draft"


def can_edit(principal: Principal, line: dict[str, Any]) -> bool:
    return principal.is_staff or principal.owns("anchor", line["anchor_id"])


def require_visible(principal: Principal, line: dict[str, Any] | None, line_id: str) -> dict[str, Any]:
    if line is None or not can_see(principal, line):
        raise not_found("Demand line", line_id)
    return line


def require_editor(principal: Principal, line: dict[str, Any] | None, line_id: str) -> dict[str, Any]:
    """404 where the line's existence would leak, 403 for a public line of another anchor."""
    line = require_visible(principal, line, line_id)
    if not can_edit(principal, line):
        raise forbidden("Only the anchor that owns this demand line, or staff, may do this.")
    return line


def visible_lines(principal: Principal) -> sa.ColumnElement[bool] | None:
    """:func:`can_see` as a condition on ``demand_lines``; None when the caller sees every line."""
    if principal.is_staff:
        return None
    shown = sa.and_(demand_lines.c.visibility == "public", demand_lines.c.status != "draft")
    if principal.role == "anchor" and principal.subject_id:
        return sa.or_(shown, demand_lines.c.anchor_id == principal.subject_id)
    return shown


def writing_anchor(principal: Principal, requested: str | None) -> str:
    """The anchor a write is for: staff name it, an anchor writes for itself only."""
    if principal.is_staff:
        if not requested:
            raise field_errors(
                [{"field": "anchor_id", "message": "staff must name the anchor the demand is for"}]
            )
        return requested
    assert principal.role == "anchor" and principal.subject_id is not None
    if requested and requested != principal.subject_id:
        raise forbidden("An anchor posts demand for itself only.")
    return principal.subject_id


def require_match_reader(principal: Principal, enterprise_id: str) -> None:
    """An enterprise's matches: staff, mentors and the enterprise itself; integrators 403."""
    if principal.role == "integrator":
        raise forbidden("Integrators cannot read an enterprise's matches.")
    if principal.role == "anchor" or (
        principal.role == "enterprise" and not principal.owns("enterprise", enterprise_id)
    ):
        raise not_found("Enterprise", enterprise_id)
