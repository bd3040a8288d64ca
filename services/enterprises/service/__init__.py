"""Use cases of the enterprises service, one module per subject.

They take a session, change state and add outbox events; they never commit. Each state
change writes its history entry and its events in the caller's transaction, and recomputes
the enterprise's overall readiness (announcing it when it changed). Queries are in
``repository.py``, rules in the domain modules (``lifecycle``, ``renewal``, ``readiness``).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import events as ev
from shared import outbox
from shared.events import new_event

Precondition = Callable[[str], None]
"""Called with the current ETag before a change (``If-Match``: raises 412 on mismatch)."""


async def publish(session: AsyncSession, type_: str, payload: BaseModel, subject: str) -> None:
    """Add an event of this service to the outbox, in the caller's transaction."""
    await outbox.add(session, new_event(type_, payload, source=ev.SOURCE, subject=subject))
