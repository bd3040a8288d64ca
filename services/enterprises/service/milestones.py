"""Enterprise milestones: their list, the status workflow and mentors' sign-offs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import events as ev
from services.enterprises import readiness, renewal, repository
from services.enterprises.actors import Actor
from services.enterprises.schemas import EnterpriseMilestone, MilestoneUpdate, Party, StandingVerification
from services.enterprises.service import Precondition, publish
from services.enterprises.service.assessment import facts_of, refresh_readiness
from services.enterprises.service.catalogue import unknown_definition
from services.enterprises.service.enterprises import load_enterprise
from services.enterprises.service.history import diff, jsonable, record
from shared.db import utcnow
from shared.http import etag
from shared.problems import Problem

TRACKED_MILESTONE_FIELDS = (
    "status",
    "evidence",
    "value_pence",
    "expires_at",
    "note",
    "standing_value_pence",
    "standing_expires_at",
)
"""The fields of a milestone whose changes its history entries show."""


def _party(row: Any, prefix: str) -> Party | None:
    role, actor = getattr(row, f"{prefix}_role"), getattr(row, f"{prefix}_actor")
    if role is None or actor is None:
        return None
    return Party(role=role, actor=actor, subject_id=getattr(row, f"{prefix}_subject"))


def _standing_out(row: Any) -> StandingVerification | None:
    if row.standing_verified_at is None:
        return None
    return StandingVerification(
        evidence=row.standing_evidence,
        value_pence=row.standing_value_pence,
        expires_at=row.standing_expires_at,
        submitted_at=row.standing_submitted_at,
        submitted_by=_party(row, "standing_submitted_by"),
        verified_at=row.standing_verified_at,
        verified_by=_party(row, "standing_verified_by"),
    )


def _milestone_out(definition: Any, state: Any, facts: readiness.Facts) -> EnterpriseMilestone:
    """A catalogue entry with the enterprise's progress on it (``state``: None if never touched)."""
    item = EnterpriseMilestone(
        code=definition.code,
        name=definition.name,
        category=definition.category,
        status=state.status if state else "not_started",
        applies=definition.core and readiness.applies(definition.applies_when, facts),
        threshold_pence=definition.threshold_pence,
    )
    if state is None:
        return item
    return item.model_copy(
        update={
            "evidence": state.evidence,
            "value_pence": state.value_pence,
            "expires_at": state.expires_at,
            "note": state.note,
            "submitted_at": state.submitted_at,
            "submitted_by": _party(state, "submitted_by"),
            "verified_at": state.verified_at,
            "verified_by": _party(state, "verified_by"),
            "version": state.version,
            "updated_at": state.updated_at,
            "renewal_pending": state.standing_verified_at is not None,
            "standing": _standing_out(state),
        }
    )


async def list_milestones(session: AsyncSession, enterprise_id: uuid.UUID) -> list[EnterpriseMilestone]:
    """Every catalogue entry with the enterprise's status on it."""
    facts = facts_of(await load_enterprise(session, enterprise_id))
    states = {r.code: r for r in await repository.milestones_of(session, enterprise_id)}
    return [_milestone_out(d, states.get(d.code), facts) for d in await repository.catalogue(session)]


async def get_milestone(session: AsyncSession, enterprise_id: uuid.UUID, code: str) -> EnterpriseMilestone:
    for item in await list_milestones(session, enterprise_id):
        if item.code == code:
            return item
    raise unknown_definition(code)


async def _definition(session: AsyncSession, code: str) -> Any:
    row = await repository.definition(session, code)
    if row is None:
        raise unknown_definition(code)
    return row


async def change_milestone(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    code: str,
    update: MilestoneUpdate,
    actor: Actor,
    precondition: Precondition | None,
    *,
    warning: timedelta,
    now: datetime | None = None,
) -> EnterpriseMilestone:
    """Move an enterprise milestone to ``update.status`` for ``actor``; 403/409/422 when not allowed."""
    now = now or utcnow()
    enterprise = await load_enterprise(session, enterprise_id, lock=True)
    definition = await _definition(session, code)
    row = await repository.milestone(session, enterprise_id, code, lock=True)
    if precondition is not None:
        precondition(etag(row.version if row else 0))
    terms = renewal.Terms(definition.threshold_pence, definition.validity_days)
    change = renewal.plan_change(code, row._mapping if row else None, update, actor, terms, now=now)
    if row is None:
        await repository.insert_milestone(session, enterprise_id, code, change.values)
    else:
        await repository.update_milestone(session, enterprise_id, code, change.values)
    await after_milestone_change(
        session,
        enterprise,
        definition,
        row,
        actor,
        now=now,
        warning=warning,
        note=update.note,
        action=change.action,
        event_type=change.event_type,
    )
    return await get_milestone(session, enterprise_id, code)


async def after_milestone_change(
    session: AsyncSession,
    enterprise: Any,
    definition: Any,
    before: Any,
    actor: Actor,
    *,
    now: datetime,
    warning: timedelta,
    note: str | None = None,
    action: str | None = None,
    event_type: str | None = None,
    refresh: bool = True,
    standing: bool = False,
) -> None:
    """History, event and readiness after a milestone row changed.

    ``standing``: the event is about the standing verification of ``before`` (its expiry
    warning or lapse while a renewal awaits review), so it carries that one's expiry and value.
    """
    after = await repository.milestone(session, enterprise.id, definition.code)
    assert after is not None, "the milestone was written in this transaction"
    old = {name: (before._mapping[name] if before is not None else None) for name in TRACKED_MILESTONE_FIELDS}
    if before is None:
        old["status"] = "not_started"
    new = {name: after._mapping[name] for name in TRACKED_MILESTONE_FIELDS}
    await record(
        session,
        enterprise.id,
        actor,
        action or f"milestone_{after.status}",
        diff(jsonable(old), jsonable(new)),
        code=definition.code,
        note=note,
        at=now,
    )
    event_type = event_type or ev.MILESTONE_EVENT_BY_STATUS.get(after.status)
    if event_type is not None:
        described = before if standing else after
        prefix = "standing_" if standing else ""
        payload = ev.MilestoneChanged(
            enterprise_id=enterprise.id,
            code=definition.code,
            category=definition.category,
            status=after.status,
            version=after.version,
            expires_at=described._mapping[f"{prefix}expires_at"],
            value_pence=described._mapping[f"{prefix}value_pence"],
            actor_role=actor.role if actor.role in ("enterprise", "staff", "mentor") else "system",
            renewal_pending=standing or renewal.has_standing(after._mapping),
        )
        await publish(session, event_type, payload, f"{enterprise.id}/{definition.code}")
    if refresh:
        await refresh_readiness(
            session, enterprise, await repository.catalogue(session), now=now, warning=warning
        )


async def record_mentor_sign_offs(
    session: AsyncSession,
    *,
    enterprise_id: uuid.UUID,
    session_id: uuid.UUID,
    mentor_id: uuid.UUID,
    codes: Sequence[str],
    warning: timedelta,
) -> bool:
    """A completed mentoring session: each signed-off code that is submitted becomes verified by
    the mentor; anything else is noted in the history. False when the enterprise is unknown."""
    if not await repository.enterprise_exists(session, enterprise_id):
        return False
    mentor = Actor("mentor", f"mentoring-session:{session_id}", str(mentor_id))
    who = f"mentor {mentor_id} (session {session_id})"
    for code in dict.fromkeys(codes):
        state = await repository.milestone(session, enterprise_id, code)
        status = state.status if state else "not_started"
        reason = None
        if status != "submitted":
            reason = f"signed off by {who}, but it was {status}, not submitted"
        elif renewal.submitted_by(state._mapping if state else None, mentor):
            reason = f"{who} signed off evidence they submitted; another reviewer must verify it"
        known = await repository.definition(session, code) is not None
        if not known:
            reason = f"{who} signed off {code!r}, which is not in the catalogue"
        if reason is not None:
            await record(
                session,
                enterprise_id,
                mentor,
                "mentor_sign_off_noted",
                {},
                code=code if known else None,
                note=reason,
            )
            continue
        signed_off = MilestoneUpdate(status="verified", note=f"signed off in mentoring session {session_id}")
        try:
            await change_milestone(session, enterprise_id, code, signed_off, mentor, None, warning=warning)
        except Problem as refused:
            # Refused before anything was written (e.g. the evidence has lapsed): note why.
            await record(
                session,
                enterprise_id,
                mentor,
                "mentor_sign_off_noted",
                {},
                code=code,
                note=f"{who} signed off {code}, but it cannot be verified: {refused.detail or refused.title}",
            )
    return True
