"""Expiry of verified milestones: a warning as the expiry nears, then the lapse."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import events as ev
from services.enterprises import renewal, repository
from services.enterprises.actors import SYSTEM
from services.enterprises.service.assessment import refresh_readiness
from services.enterprises.service.milestones import after_milestone_change


@dataclass(frozen=True)
class ExpiryPass:
    changed: int  # milestones warned about or expired
    candidates: int  # enterprises with due milestones seen
    claimed: int  # of those, the ones this run locked and handled


async def _expiry_pass(
    session: AsyncSession,
    due: Sequence[sa.ColumnElement[bool]],
    *,
    claim: dict[str, Any],
    now: datetime,
    warning: timedelta,
    batch: int,
    action: str | None,
    event_type: str | None,
    note: str,
    standing: bool = False,
) -> ExpiryPass:
    """Apply ``claim`` to the ``due`` milestones of up to ``batch`` enterprises.

    Enterprises are claimed first, as requests do (enterprise row, then its milestones), so a
    job and a request never deadlock; on PostgreSQL with ``SKIP LOCKED``, so replicas take
    disjoint enterprises and a job never waits. The conditional UPDATE of each milestone (same
    version, still due) decides who announces it: two replicas, two overlapping runs or a run
    after a restart never announce one twice.
    """
    expiry = repository.verification_columns(standing)[1]
    candidates = await repository.enterprises_with_due_milestones(session, due, expiry, batch)
    if not candidates:
        return ExpiryPass(0, 0, 0)
    claimed = await repository.claim_enterprises(session, candidates)
    changed = 0
    catalogue: list[Any] | None = None
    for enterprise in claimed:
        announced = False
        for row in await repository.due_milestones(session, enterprise.id, due):
            if not await repository.claim_due_milestone(session, row, due, claim, now):
                continue
            definition = await repository.definition(session, row.code)
            lapses = row._mapping[expiry.key]
            await after_milestone_change(
                session,
                enterprise,
                definition,
                row,
                SYSTEM,
                now=now,
                warning=warning,
                note=note.format(expires_at=lapses.isoformat() if lapses else "?"),
                action=action,
                event_type=event_type,
                refresh=False,
                standing=standing,
            )
            announced = True
            changed += 1
        if announced:
            catalogue = catalogue if catalogue is not None else await repository.catalogue(session)
            await refresh_readiness(session, enterprise, catalogue, now=now, warning=warning)
    return ExpiryPass(changed, len(candidates), len(claimed))


async def warn_expiring(
    session: AsyncSession, *, now: datetime, warning: timedelta, batch: int = 500, standing: bool = False
) -> ExpiryPass:
    """Send ``milestone.expiring`` once per verification entering the warning window.

    ``standing``: the standing verifications of milestones whose renewal awaits review; one
    that was warned of before its renewal is not warned again."""
    verified, expires_at, warned = repository.verification_columns(standing)
    due = [
        verified,
        warned.is_(False),
        expires_at.is_not(None),
        expires_at > now,
        expires_at <= now + warning,
    ]
    return await _expiry_pass(
        session,
        due,
        claim={warned.key: True},
        now=now,
        warning=warning,
        batch=batch,
        action="standing_verification_expiring" if standing else "milestone_expiring",
        event_type=ev.MILESTONE_EXPIRING,
        note=(
            "the verification standing while its renewal is reviewed expires at {expires_at}"
            if standing
            else "expires at {expires_at}"
        ),
        standing=standing,
    )


async def expire_lapsed(
    session: AsyncSession, *, now: datetime, warning: timedelta, batch: int = 500, standing: bool = False
) -> ExpiryPass:
    """Mark verified milestones whose expiry passed as ``expired``, once each, and announce it.

    ``standing``: drop the standing verifications whose expiry passed while their renewal is
    still pending (``milestone.expired``); the renewal stays as it is."""
    verified, expires_at, _ = repository.verification_columns(standing)
    due = [verified, expires_at.is_not(None), expires_at <= now]
    return await _expiry_pass(
        session,
        due,
        claim=renewal.NO_STANDING if standing else {"status": "expired"},
        now=now,
        warning=warning,
        batch=batch,
        action="standing_verification_expired" if standing else None,
        event_type=ev.MILESTONE_EXPIRED if standing else None,
        note=(
            "the verification standing while its renewal is reviewed lapsed at {expires_at}"
            if standing
            else "lapsed at {expires_at}"
        ),
        standing=standing,
    )
