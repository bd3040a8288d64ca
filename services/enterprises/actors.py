"""Who caused a change: recorded in histories and events, and checked by the four-eyes rule."""

from __future__ import annotations

from dataclasses import dataclass

from shared.principal import Principal


@dataclass(frozen=True)
class Actor:
    """Who caused a change, for histories, events and the four-eyes rule."""

    role: str
    actor: str
    subject_id: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.role, principal.actor, principal.subject_id)


SYSTEM = Actor("system", "expiry-job")
AWARD = Actor("system", "demand-award")
"""An award heard from the demand service, rechecking the bids on its line."""
