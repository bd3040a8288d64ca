"""Events the enterprises service publishes (payload models) and handlers of those it consumes.

Payloads follow docs/EVENTS.md (enterprises section) field for field; the AsyncAPI
document is generated from ``PUBLISHED``. The consumed payloads are tolerant copies
of the fields this service reads (``extra="ignore"``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from shared.asyncapi import EventSpec
from shared.events import CloudEvent, event_source, event_type
from shared.inbox import ConsumerSpec, EventHandler, PermanentEventError

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

MILESTONE_EVENT_BY_STATUS = {
    "submitted": MILESTONE_SUBMITTED,
    "verified": MILESTONE_VERIFIED,
    "rejected": MILESTONE_REJECTED,
    "expired": MILESTONE_EXPIRED,
}

LegalForm = Literal[
    "company_limited_by_shares",
    "company_limited_by_guarantee",
    "cic_limited_by_shares",
    "cic_limited_by_guarantee",
    "cio",
    "charity",
    "cooperative_society",
    "community_benefit_society",
    "sole_trader",
    "partnership",
    "other",
]
StageName = Literal["applicant", "incubating", "tender_ready", "graduated", "withdrawn"]
Category = Literal[
    "legal", "insurance", "policy", "accreditation", "financial", "social_value", "bidding", "digital"
]
ActorRole = Literal["enterprise", "staff", "mentor", "system"]


# --- published -------------------------------------------------------------------------------


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
    size_class: Literal["micro", "small", "medium", "large"]


class EnterpriseStageChanged(EnterpriseSnapshot):
    from_stage: StageName
    to_stage: StageName


class MilestoneChanged(BaseModel):
    """An enterprise milestone after a change of status (or an expiry warning)."""

    enterprise_id: uuid.UUID
    code: str
    category: Category
    status: Literal["not_started", "in_progress", "submitted", "verified", "rejected", "expired"]
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
]


# --- consumed --------------------------------------------------------------------------------


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DemandRequirementIn(_Tolerant):
    code: str = Field(min_length=1, max_length=64)
    min_value_pence: int | None = Field(default=None, ge=0)


class DemandLineIn(_Tolerant):
    """``demand.item.published.v1`` / ``updated.v1``: the fields readiness needs."""

    demand_id: uuid.UUID
    version: int
    status: str = "planned"
    title: str | None = None
    requirements: list[DemandRequirementIn] = Field(default_factory=list)


class DemandWithdrawnIn(_Tolerant):
    """``demand.item.withdrawn.v1``."""

    demand_id: uuid.UUID
    version: int
    status: str = "withdrawn"


class SessionCompletedIn(_Tolerant):
    """``mentoring.session.completed.v1``: who signed off which milestones."""

    session_id: uuid.UUID
    mentor_id: uuid.UUID
    enterprise_id: uuid.UUID
    outcome: str | None = None
    signed_off_milestones: list[str] = Field(default_factory=list)


DEFAULT_EXPIRY_WARNING = timedelta(days=30)


async def on_demand_item(session: AsyncSession, event: CloudEvent) -> None:
    from services.enterprises import service

    if event.type.startswith("demand.item.withdrawn."):
        withdrawn = DemandWithdrawnIn.model_validate(event.data or {})
        await service.record_demand_withdrawn(session, withdrawn)
    elif event.type.startswith(("demand.item.published.", "demand.item.updated.")):
        line = DemandLineIn.model_validate(event.data or {})
        await service.record_demand_line(session, line)
    # Other demand.item.* events carry nothing readiness needs.


def session_completed_handler(warning: timedelta) -> EventHandler:
    """The handler of ``mentoring.session.completed.v1`` (readiness uses the expiry ``warning``)."""

    async def on_session_completed(session: AsyncSession, event: CloudEvent) -> None:
        from services.enterprises import service

        completed = SessionCompletedIn.model_validate(event.data or {})
        if not await service.record_mentor_sign_offs(session, completed, warning=warning):
            raise PermanentEventError(
                f"no enterprise {completed.enterprise_id} for session {completed.session_id}"
            )

    return on_session_completed


def consumer_specs(warning: timedelta = DEFAULT_EXPIRY_WARNING) -> list[ConsumerSpec]:
    """The durable consumers of this service (docs/EVENTS.md, "Who consumes what")."""
    return [
        ConsumerSpec(
            durable="enterprises-demand",
            stream="DEMAND",
            subjects=["demand.item.>"],
            handler=on_demand_item,
        ),
        ConsumerSpec(
            durable="enterprises-mentoring",
            stream="MENTORING",
            subjects=["mentoring.session.completed.v1"],
            handler=session_completed_handler(warning),
        ),
    ]


CONSUMERS: list[ConsumerSpec] = consumer_specs()
