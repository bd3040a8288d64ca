"""Handlers of the events the demand service consumes, and its consumer list.

``demand-enterprises`` keeps the enterprise read model for matching
(:func:`services.demand.events.on_enterprise_event`). ``demand-matching`` reads the
service's own public line events and announces the enterprises that fit each line
(``demand.match.found.v1``), in the transaction of its inbox row.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import events, service
from shared.events import CloudEvent
from shared.inbox import ConsumerSpec

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
        await service.announce_matches(session, line.demand_id, line.version, MATCHES_ANNOUNCED)


CONSUMERS: list[ConsumerSpec] = [
    *events.CONSUMERS,
    ConsumerSpec(
        durable="demand-matching",
        stream="DEMAND",
        subjects=[events.ITEM_PUBLISHED, events.ITEM_UPDATED],
        handler=on_public_line,
    ),
]
