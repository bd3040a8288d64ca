"""Events the enterprises service publishes: their types and payload models.

Payloads follow docs/EVENTS.md (enterprises section) field for field; the AsyncAPI
document is generated from ``PUBLISHED``. The handlers of consumed events are in
``consumers.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from services.enterprises.vocabulary import (
    ActorRole,
    AwardCheck,
    BidRole,
    BidStatus,
    Category,
    LegalForm,
    MilestoneStatus,
    SizeClass,
    StageName,
)
from shared.asyncapi import EventSpec
from shared.events import event_source, event_type

SERVICE = "enterprises"
SOURCE = event_source(SERVICE)

ENTERPRISE_REGISTERED = event_type(SERVICE, "enterprise", "registered")
ENTERPRISE_UPDATED = event_type(SERVICE, "enterprise", "updated")
ENTERPRISE_STAGE_CHANGED = event_type(SERVICE, "enterprise", "stage_changed")
MILESTONE_SUBMITTED = event_type(SERVICE, "milestone", "submitted")
MILESTONE_VERIFIED = event_type(SERVICE, "milestone", "verified")
MILESTONE_REJECTED = event_type(SERVICE, "milestone", "rejected")
MILESTONE_EXPIRING = event_type(SERVICE, "milestone", "expiring")
MILESTONE_EXPIRED = event_type(SERVICE, "milestone", "expired")
READINESS_CHANGED = event_type(SERVICE, "readiness", "changed")
MILESTONE_DEFINITION_PUBLISHED = event_type(SERVICE, "milestone_definition", "published")
BID_CHANGED = event_type(SERVICE, "bid", "changed")

MILESTONE_EVENT_BY_STATUS = {
    "submitted": MILESTONE_SUBMITTED,
    "verified": MILESTONE_VERIFIED,
    "rejected": MILESTONE_REJECTED,
    "expired": MILESTONE_EXPIRED,
}


class EnterpriseSnapshot(BaseModel):
    """The whole current state of an enterprise that consumers match on."""

    enterprise_id: uuid.UUID
    version: int = Field(description="Grows with every change of the enterprise.")
    name: str
    legal_form: LegalForm
    stage: StageName
    cohort_id: uuid.UUID | None
    postcode: str = Field(description="Normalised UK postcode, e.g. LS6 2QR.")
    cpv_codes: list[str] = Field(description="CPV codes of what it can supply.")
    max_contract_value_pence: int | None = Field(description="Capacity: the largest contract it can take.")
    employees: int | None
    turnover_pence: int | None
    vcse: bool
    size_class: SizeClass


class EnterpriseStageChanged(EnterpriseSnapshot):
    from_stage: StageName
    to_stage: StageName


class MilestoneChanged(BaseModel):
    """An enterprise milestone after a change of status (or an expiry warning)."""

    enterprise_id: uuid.UUID
    code: str
    category: Category
    status: MilestoneStatus
    version: int = Field(description="Grows with every change of this enterprise milestone.")
    expires_at: datetime | None
    value_pence: int | None = Field(description="The evidenced amount (insured cover), when there is one.")
    actor_role: ActorRole
    renewal_pending: bool = Field(
        default=False,
        description="A verification stands while its early renewal (status submitted) awaits review. "
        "On submitted: expires_at and value_pence are the renewal's; on expiring and expired they are "
        "the standing verification's.",
    )


class VerifiedMilestoneOut(BaseModel):
    code: str
    expires_at: datetime | None
    value_pence: int | None


class ReadinessChanged(BaseModel):
    """An enterprise's overall readiness, sent whenever the result changes."""

    enterprise_id: uuid.UUID
    version: int = Field(description="Grows with every readiness change of this enterprise.")
    score: float = Field(ge=0, le=1)
    ready: bool
    missing: list[str] = Field(description="Codes that apply and are not verified and unexpired.")
    expiring_soon: list[str] = Field(description="Verified codes expiring within the warning window.")
    verified: list[VerifiedMilestoneOut] = Field(description="Every verified, unexpired milestone.")


class MilestoneDefinitionPublished(BaseModel):
    """A catalogue entry as it now stands (state-carrying): sent when it is added or changed, and
    once for every definition the catalogue held before this event existed (the built-in ones)."""

    code: str = Field(description="The milestone code a demand line's requirements name.")
    version: int = Field(description="Grows with every change of the definition.")
    name: str
    category: Category
    description: str
    applies_when: dict[str, Any] = Field(description="The rule on the enterprise's facts (readiness.py).")
    threshold_pence: int | None
    validity_days: int | None
    core: bool
    builtin: bool


def definition_published(definition: Any) -> MilestoneDefinitionPublished:
    """The payload of a definition (a row or any object with its columns as attributes)."""
    return MilestoneDefinitionPublished(
        code=definition.code,
        version=definition.version,
        name=definition.name,
        category=definition.category,
        description=definition.description,
        applies_when=dict(definition.applies_when),
        threshold_pence=definition.threshold_pence,
        validity_days=definition.validity_days,
        core=definition.core,
        builtin=definition.builtin,
    )


class BidChanged(BaseModel):
    """A bid as it now stands (state-carrying): sent for every change, the enterprise's, staff's,
    and the award check's when an award of its line arrives."""

    bid_id: uuid.UUID
    version: int = Field(description="Grows with every change of the bid.")
    enterprise_id: uuid.UUID
    demand_id: uuid.UUID
    anchor_id: uuid.UUID | None = Field(description="The line's anchor, when known here.")
    role: BidRole
    partners: list[str]
    status: BidStatus
    contract_value_pence: int | None = Field(description="What the contract won is worth (won bids).")
    submitted_at: datetime | None
    decided_at: datetime | None = Field(description="When it was won, lost or withdrawn.")
    award_check: AwardCheck | None = Field(
        description="The bid against the line's award; null while no award is known."
    )
    cohort_id: uuid.UUID | None = Field(description="The enterprise's cohort.")
    at: datetime = Field(description="When the change was made.")


PUBLISHED: list[EventSpec] = [
    EventSpec(ENTERPRISE_REGISTERED, EnterpriseSnapshot, "An enterprise was registered."),
    EventSpec(ENTERPRISE_UPDATED, EnterpriseSnapshot, "An enterprise's profile changed."),
    EventSpec(ENTERPRISE_STAGE_CHANGED, EnterpriseStageChanged, "An enterprise moved to another stage."),
    EventSpec(MILESTONE_SUBMITTED, MilestoneChanged, "An enterprise submitted evidence for a milestone."),
    EventSpec(MILESTONE_VERIFIED, MilestoneChanged, "Staff or a mentor verified a milestone."),
    EventSpec(MILESTONE_REJECTED, MilestoneChanged, "Staff or a mentor rejected a milestone."),
    EventSpec(
        MILESTONE_EXPIRING, MilestoneChanged, "A verified milestone expires within the warning window."
    ),
    EventSpec(MILESTONE_EXPIRED, MilestoneChanged, "A verified milestone lapsed."),
    EventSpec(READINESS_CHANGED, ReadinessChanged, "An enterprise's overall tender readiness changed."),
    EventSpec(
        MILESTONE_DEFINITION_PUBLISHED,
        MilestoneDefinitionPublished,
        "A milestone definition was added to the catalogue or changed (also sent once for each "
        "definition the catalogue held before this event existed).",
    ),
    EventSpec(
        BID_CHANGED,
        BidChanged,
        "A bid of an enterprise on a demand line was made or changed, or its award check changed.",
    ),
]
