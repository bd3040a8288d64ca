"""Handlers of the events the demand service consumes, and its consumer list.

``demand-enterprises`` keeps :mod:`services.demand.read_models` (the enterprises and
their verified milestones, for matching) from the enterprises' state-carrying events.
Each payload model below is our tolerant copy of the fields we read.
"""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import read_models
from shared.events import CloudEvent
from shared.inbox import ConsumerSpec

log = logging.getLogger("seedbed.demand.consumers")

ENTERPRISE_SNAPSHOT_TYPES = frozenset(
    {
        "enterprises.enterprise.registered.v1",
        "enterprises.enterprise.updated.v1",
        "enterprises.enterprise.stage_changed.v1",
    }
)
READINESS_CHANGED = "enterprises.readiness.changed.v1"


class EnterpriseSnapshotIn(BaseModel):
    """Our tolerant copy of the enterprise snapshot fields we read."""

    model_config = ConfigDict(extra="ignore")

    enterprise_id: str
    version: int
    name: str
    legal_form: str | None = None
    stage: str
    cohort_id: str | None = None
    postcode: str | None = None
    cpv_codes: list[str] = Field(default_factory=list)
    max_contract_value_pence: int | None = None
    employees: int | None = None
    turnover_pence: int | None = None
    vcse: bool = False
    size_class: str | None = None


class VerifiedMilestoneIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str
    expires_at: datetime | None = None
    value_pence: int | None = None


class ReadinessChangedIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    enterprise_id: str
    version: int
    score: float = 0.0
    ready: bool = False
    missing: list[str] = Field(default_factory=list)
    expiring_soon: list[str] = Field(default_factory=list)
    verified: list[VerifiedMilestoneIn] = Field(default_factory=list)


async def on_enterprise_event(session: AsyncSession, event: CloudEvent) -> None:
    """Keep the enterprise read model; a payload that does not validate is dead-lettered."""
    if event.type in ENTERPRISE_SNAPSHOT_TYPES:
        snapshot = EnterpriseSnapshotIn.model_validate(event.data or {})
        await read_models.store_enterprise(session, snapshot.model_dump())
    elif event.type == READINESS_CHANGED:
        readiness = ReadinessChangedIn.model_validate(event.data or {})
        await read_models.store_readiness(session, readiness.model_dump(mode="json"))
    else:
        log.info("event not used for matching", extra={"event_type": event.type, "event_id": event.id})


CONSUMERS: list[ConsumerSpec] = [
    ConsumerSpec(
        durable="demand-enterprises",
        stream="ENTERPRISES",
        subjects=["enterprises.enterprise.>", READINESS_CHANGED],
        handler=on_enterprise_event,
    )
]
