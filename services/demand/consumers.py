"""Handlers of the events the demand service consumes, and its consumer list.

``demand-enterprises`` keeps :mod:`services.demand.read_models` (the enterprises and
their verified milestones, for matching) from the enterprises' state-carrying events.
``demand-catalogue`` keeps the copy of the milestone catalogue that a line's requirement
codes are checked against, from ``enterprises.milestone_definition.published.v1``.
``demand-matching`` reads the service's own public line events and announces the
enterprises that fit each line (``demand.match.found.v1``), in the transaction of its
inbox row. Each payload model below is our tolerant copy of the fields we read.
"""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import events, read_models
from services.demand.service import matching as matching_service
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


MILESTONE_DEFINITION_PUBLISHED = "enterprises.milestone_definition.published.v1"


class MilestoneDefinitionIn(BaseModel):
    """Our tolerant copy of the catalogue entry fields we read."""

    model_config = ConfigDict(extra="ignore")

    code: str
    version: int
    name: str
    category: str


async def on_catalogue_event(session: AsyncSession, event: CloudEvent) -> None:
    """Keep the copy of the milestone catalogue; a payload that does not validate is dead-lettered."""
    if event.type == MILESTONE_DEFINITION_PUBLISHED:
        definition = MilestoneDefinitionIn.model_validate(event.data or {})
        await read_models.store_milestone_definition(session, definition.model_dump())
    else:
        log.info("event not used for the catalogue", extra={"event_type": event.type, "event_id": event.id})


MATCHED_TYPES = frozenset({events.ITEM_PUBLISHED, events.ITEM_UPDATED})
MATCHES_ANNOUNCED = 20  # the best fits of a line; the API's candidates list goes further


class PublicLineIn(BaseModel):
    """Our tolerant copy of the line event fields matching reads (the line is read afresh)."""

    model_config = ConfigDict(extra="ignore")

    demand_id: str
    version: int


async def on_public_line(session: AsyncSession, event: CloudEvent) -> None:
    if event.type in MATCHED_TYPES:
        line = PublicLineIn.model_validate(event.data or {})
        await matching_service.announce_matches(session, line.demand_id, line.version, MATCHES_ANNOUNCED)


CONSUMERS: list[ConsumerSpec] = [
    ConsumerSpec(
        durable="demand-enterprises",
        stream="ENTERPRISES",
        subjects=["enterprises.enterprise.>", READINESS_CHANGED],
        handler=on_enterprise_event,
    ),
    ConsumerSpec(
        durable="demand-catalogue",
        stream="ENTERPRISES",
        subjects=["enterprises.milestone_definition.>"],
        handler=on_catalogue_event,
    ),
    ConsumerSpec(
        durable="demand-matching",
        stream="DEMAND",
        subjects=[events.ITEM_PUBLISHED, events.ITEM_UPDATED],
        handler=on_public_line,
    ),
]
