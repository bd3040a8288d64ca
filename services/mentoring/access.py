"""Who may do what in the mentoring service (docs/ACCESS.md).

Another tenant's session answers 404 (its existence is not ours to tell); a mentor profile the
caller may see but not change answers 403 (mentors are not secret); the ``public`` principal
reaches only a calendar feed, with its secret token.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.engine import Row

from shared.principal import Principal, Role
from shared.problems import forbidden

MENTOR_READERS: tuple[Role, ...] = ("staff", "anchor", "enterprise", "mentor")


def allow(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise forbidden(f"This action needs one of the roles: {', '.join(roles)}.")


def allow_mentor_owner(principal: Principal, mentor_id: uuid.UUID) -> None:
    """Staff, or the mentor itself (403 for the others: mentors are not secret)."""
    if principal.is_staff or principal.owns("mentor", mentor_id):
        return
    raise forbidden("Only staff or the mentor themselves may do this.")


def is_participant(principal: Principal, row: Row[Any]) -> bool:
    return principal.owns("enterprise", row.enterprise_id) or principal.owns("mentor", row.mentor_id)
