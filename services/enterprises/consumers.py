"""Handlers of the events the enterprises service consumes, and its durable consumers.

The payload models here are tolerant copies of the fields this service reads from other
services' events (``extra="ignore"``); contract tests hold them to the producers' models.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import read_models
from services.enterprises.service import bids, milestones
from shared.events import CloudEvent
from shared.inbox import ConsumerSpec, EventHandler, PermanentEventError

DEFAULT_EXPIRY_WARNING = timedelta(days=30)


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DemandRequirementIn(_Tolerant):
    code: str = Field(min_length=1, max_length=64)
    min_value_pence: int | None = Field(default=None, ge=0)


class DeliveryAreaIn(_Tolerant):
    label: str


class DemandLineIn(_Tolerant):
    """``demand.item.published.v1`` / ``updated.v1``: the fields readiness, bids and the impact
    report need."""

    demand_id: uuid.UUID
    version: int
    status: str = "planned"
    title: str | None = None
    requirements: list[DemandRequirementIn] = Field(default_factory=list)
    anchor_id: uuid.UUID | None = None
    estimated_value_pence: int | None = None
    cpv_codes: list[str] = Field(default_factory=list)
    delivery_area: DeliveryAreaIn | str | None = None

    @property
    def delivery_area_label(self) -> str | None:
        area = self.delivery_area
        return area.label if isinstance(area, DeliveryAreaIn) else area


class DemandAwardedIn(_Tolerant):
    """``demand.item.awarded.v1``: whom a line was awarded to, for how much, when."""

    demand_id: uuid.UUID
    version: int
    anchor_id: uuid.UUID | None = None
    supplier_name: str = Field(min_length=1)
    supplier_registration_number: str | None = None
    enterprise_id: uuid.UUID | None = None
    contract_value_pence: int = Field(ge=0)
    awarded_on: date


class DemandWithdrawnIn(_Tolerant):
    """``demand.item.withdrawn.v1``."""

    demand_id: uuid.UUID
    version: int
    status: str = "withdrawn"


class SessionCompletedIn(_Tolerant):
    """``mentoring.session.completed.v1``: who signed off which milestones, and the hours."""

    session_id: uuid.UUID
    sequence: int = 0
    mentor_id: uuid.UUID
    enterprise_id: uuid.UUID
    start: AwareDatetime
    end: AwareDatetime
    milestone_code: str | None = Field(default=None, max_length=64)
    outcome: str | None = None
    signed_off_milestones: list[str] = Field(default_factory=list)


async def on_demand_item(session: AsyncSession, event: CloudEvent) -> None:
    if event.type.startswith("demand.item.withdrawn."):
        withdrawn = DemandWithdrawnIn.model_validate(event.data or {})
        await read_models.record_demand_withdrawn(
            session, withdrawn.demand_id, version=withdrawn.version, status=withdrawn.status
        )
    elif event.type.startswith(("demand.item.published.", "demand.item.updated.")):
        line = DemandLineIn.model_validate(event.data or {})
        await read_models.record_demand_line(
            session,
            line.demand_id,
            version=line.version,
            status=line.status,
            title=line.title,
            requirements=[r.model_dump() for r in line.requirements],
            anchor_id=line.anchor_id,
            estimated_value_pence=line.estimated_value_pence,
            cpv_codes=line.cpv_codes,
            delivery_area=line.delivery_area_label,
            seen_at=event.time,
        )
    elif event.type.startswith("demand.item.awarded."):
        awarded = DemandAwardedIn.model_validate(event.data or {})
        await bids.record_award(
            session,
            awarded.demand_id,
            version=awarded.version,
            anchor_id=awarded.anchor_id,
            supplier_name=awarded.supplier_name,
            registration_number=awarded.supplier_registration_number,
            enterprise_id=awarded.enterprise_id,
            value_pence=awarded.contract_value_pence,
            awarded_on=awarded.awarded_on,
        )
    # Other demand.item.* events carry nothing readiness or bids need.


def session_completed_handler(warning: timedelta) -> EventHandler:
    """The handler of ``mentoring.session.completed.v1`` (readiness uses the expiry ``warning``)."""

    async def on_session_completed(session: AsyncSession, event: CloudEvent) -> None:
        completed = SessionCompletedIn.model_validate(event.data or {})
        known = await milestones.record_mentor_sign_offs(
            session,
            enterprise_id=completed.enterprise_id,
            session_id=completed.session_id,
            mentor_id=completed.mentor_id,
            codes=completed.signed_off_milestones,
            warning=warning,
        )
        if not known:
            raise PermanentEventError(
                f"no enterprise {completed.enterprise_id} for session {completed.session_id}"
            )
        await read_models.record_completed_session(
            session,
            {
                "session_id": completed.session_id,
                "sequence": completed.sequence,
                "enterprise_id": completed.enterprise_id,
                "mentor_id": completed.mentor_id,
                "starts_at": completed.start,
                "ends_at": completed.end,
                "completed_at": event.time,
                "milestone_code": completed.milestone_code,
                "signed_off_milestones": completed.signed_off_milestones,
            },
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
