"""The events the mentoring service consumes, and what it does with them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import read_models
from shared.events import CloudEvent
from shared.inbox import ConsumerSpec


async def on_enterprises_event(session: AsyncSession, event: CloudEvent) -> None:
    """Keep the enterprise read model; events of other enterprise types are not ours to read."""
    if event.type in read_models.ENTERPRISE_SNAPSHOTS:
        snapshot = read_models.EnterpriseSnapshot.model_validate(event.data)
        await read_models.record_enterprise(session, snapshot)
    elif event.type == read_models.READINESS_CHANGED:
        readiness = read_models.ReadinessChanged.model_validate(event.data)
        await read_models.record_readiness(session, readiness)


CONSUMERS: list[ConsumerSpec] = [
    ConsumerSpec(
        durable="mentoring-enterprises",
        stream="ENTERPRISES",
        subjects=["enterprises.enterprise.>", read_models.READINESS_CHANGED],
        handler=on_enterprises_event,
    )
]
