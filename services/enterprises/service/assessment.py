"""Readiness of enterprises: assessed on request, stored and announced when it changes."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import events as ev
from services.enterprises import read_models, readiness, repository
from services.enterprises.schemas import GapOut, ReadinessOut, VerifiedOut
from services.enterprises.service.catalogue import readiness_definitions
from shared import outbox
from shared.events import new_event
from shared.problems import not_found


def facts_of(values: Any) -> readiness.Facts:
    """The facts readiness rules look at, from a row or a mapping of enterprise columns."""
    m: Mapping[str, Any] = values._mapping if hasattr(values, "_mapping") else values
    return readiness.Facts(
        legal_form=m["legal_form"],
        employees=m["employees"],
        turnover_pence=m["turnover_pence"],
        max_contract_value_pence=m["max_contract_value_pence"],
        size_class=m["size_class"],
        cpv_codes=tuple(m["cpv_codes"]),
        vcse=m["vcse"],
        handles_personal_data=m["handles_personal_data"],
        works_with_public=m["works_with_public"],
        works_with_vulnerable_people=m["works_with_vulnerable_people"],
        provides_professional_advice=m["provides_professional_advice"],
    )


def _state_of(row: Any) -> readiness.MilestoneState:
    standing = None
    if row.standing_verified_at is not None:
        standing = readiness.Standing(row.standing_expires_at, row.standing_value_pence)
    return readiness.MilestoneState(row.code, row.status, row.expires_at, row.value_pence, standing)


async def milestone_states(
    session: AsyncSession, enterprise_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[readiness.MilestoneState]]:
    states: dict[uuid.UUID, list[readiness.MilestoneState]] = {}
    for row in await repository.milestone_states(session, enterprise_ids):
        states.setdefault(row.enterprise_id, []).append(_state_of(row))
    return states


def readiness_digest(result: readiness.Readiness) -> str:
    """A fingerprint of what readiness.changed carries, to tell whether it changed."""
    canonical = {
        "score": round(result.score, 9),
        "ready": result.ready,
        "missing": list(result.missing),
        "expiring_soon": list(result.expiring_soon),
        "verified": [
            [v.code, v.expires_at.isoformat() if v.expires_at else None, v.value_pence]
            for v in result.verified
        ],
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def overall_readiness(
    row: Any,
    states: Sequence[readiness.MilestoneState],
    definitions: Sequence[readiness.Definition],
    *,
    now: datetime,
    warning: timedelta,
    profiles: dict[readiness.Facts, list[readiness.Requirement]] | None = None,
) -> readiness.Readiness:
    """Readiness against the core definitions that apply to the row's facts.

    ``profiles`` caches the requirements per set of facts across a batch: many enterprises
    share the facts the rules look at.
    """
    facts = facts_of(row)
    requirements = profiles.get(facts) if profiles is not None else None
    if requirements is None:
        requirements = readiness.overall_requirements(facts, definitions)
        if profiles is not None:
            profiles[facts] = requirements
    return readiness.assess(states, requirements, now=now, warning=warning)


def _readiness_event(enterprise_id: uuid.UUID, version: int, result: readiness.Readiness) -> Any:
    payload = ev.ReadinessChanged(
        enterprise_id=enterprise_id,
        version=version,
        score=result.score,
        ready=result.ready,
        missing=list(result.missing),
        expiring_soon=list(result.expiring_soon),
        verified=[
            ev.VerifiedMilestoneOut(code=v.code, expires_at=v.expires_at, value_pence=v.value_pence)
            for v in result.verified
        ],
    )
    return new_event(ev.READINESS_CHANGED, payload, source=ev.SOURCE, subject=str(enterprise_id))


async def _announce_readiness(
    session: AsyncSession, row: Any, result: readiness.Readiness, digest: str
) -> bool:
    """Store and announce a readiness result if it differs from the last one announced."""
    if row.readiness_digest == digest:
        if row.readiness_stale:
            await repository.clear_readiness_stale(session, [row.id])
        return False
    version = await repository.store_readiness(
        session, row.id, digest=digest, score=result.score, ready=result.ready
    )
    await outbox.add(session, _readiness_event(row.id, version, result))
    return True


async def refresh_readiness(
    session: AsyncSession, row: Any, catalogue: Sequence[Any], *, now: datetime, warning: timedelta
) -> bool:
    """Recompute one enterprise's overall readiness; announce it when it changed."""
    states = (await milestone_states(session, [row.id])).get(row.id, [])
    result = overall_readiness(row, states, readiness_definitions(catalogue), now=now, warning=warning)
    return await _announce_readiness(session, row, result, readiness_digest(result))


async def recompute_stale_readiness(
    session: AsyncSession, *, now: datetime, warning: timedelta, batch: int = 1000
) -> tuple[int, int]:
    """Recompute one batch of enterprises marked stale by a catalogue change.

    Returns (recomputed, announced). Replicas never take the same rows (see
    ``repository.claim_stale_enterprises``).
    """
    rows = await repository.claim_stale_enterprises(session, batch)
    if not rows:
        return 0, 0
    definitions = readiness_definitions(await repository.catalogue(session))
    states = await milestone_states(session, [r.id for r in rows])
    unchanged: list[uuid.UUID] = []
    changed: list[dict[str, Any]] = []
    announcements = []
    profiles: dict[readiness.Facts, list[readiness.Requirement]] = {}
    for row in rows:
        result = overall_readiness(
            row, states.get(row.id, []), definitions, now=now, warning=warning, profiles=profiles
        )
        digest = readiness_digest(result)
        if digest == row.readiness_digest:
            unchanged.append(row.id)
            continue
        # The rows are locked by this transaction, so the next version is ours to give.
        version = row.readiness_version + 1
        changed.append(
            {
                "row_id": row.id,
                "new_version": version,
                "new_digest": digest,
                "new_score": result.score,
                "new_ready": result.ready,
            }
        )
        announcements.append(_readiness_event(row.id, version, result))
    if changed:
        await repository.store_readiness_batch(session, changed)
        await outbox.add_many(session, announcements)
    if unchanged:
        await repository.clear_readiness_stale(session, unchanged)
    return len(rows), len(changed)


async def assess_enterprise(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    *,
    demand_id: uuid.UUID | None,
    now: datetime,
    warning: timedelta,
) -> ReadinessOut:
    """Readiness overall, or for one public demand line's requirements."""
    row = await repository.enterprise(session, enterprise_id)
    if row is None:
        raise not_found("Enterprise", enterprise_id)
    states = (await milestone_states(session, [enterprise_id])).get(enterprise_id, [])
    if demand_id is None:
        definitions = readiness_definitions(await repository.catalogue(session))
        result = overall_readiness(row, states, definitions, now=now, warning=warning)
    else:
        requirements = await read_models.demand_requirements(session, demand_id)
        result = readiness.assess(states, requirements, now=now, warning=warning)
    return ReadinessOut(
        enterprise_id=enterprise_id,
        demand_id=demand_id,
        score=result.score,
        ready=result.ready,
        missing=list(result.missing),
        expiring_soon=list(result.expiring_soon),
        verified=[VerifiedOut.model_validate(v) for v in result.verified],
        required=list(result.required),
        gaps=[GapOut.model_validate(g) for g in result.gaps],
        assessed_at=now,
    )
