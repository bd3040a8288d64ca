"""Bids: an enterprise's bids on public demand lines, their outcomes, and the awards they are
checked against.

Every change of a bid writes one history row and one ``enterprises.bid.changed.v1`` in the
caller's transaction. ``award_check`` is recomputed from the current state on both sides (a bid
changing, an award arriving), so the order the two come in never matters. Writers lock the
line's row before its bids (creating or changing a bid, recording an award), in that order.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import access, bidding, read_models, repository
from services.enterprises import events as ev
from services.enterprises.actors import AWARD, Actor
from services.enterprises.identifiers import normalise_registration_number, registration_number_spellings
from services.enterprises.repository import BidFilters
from services.enterprises.schemas import Bid, BidCreate, BidCreated, BidHistoryEntry, Party
from services.enterprises.service import Precondition, publish
from services.enterprises.service.assessment import assess_enterprise
from services.enterprises.service.enterprises import load_enterprise
from shared.db import utcnow
from shared.http import etag
from shared.principal import Principal
from shared.problems import Problem, conflict, field_errors, not_found

BID_FIELDS = ("status", "role", "partners", "contract_value_pence", "note")
"""What a request may change; the rest follows from these."""


def _duplicate(demand_id: uuid.UUID, existing: uuid.UUID | None) -> Problem:
    extra = {"bid_id": str(existing)} if existing else {}
    return conflict(
        f"This enterprise already has a bid on demand line {demand_id}"
        + (f": bid {existing}." if existing else "."),
        errors=[{"field": "demand_id", "message": "already bid on; change that bid instead"}],
        **extra,
    )


def award_of(line: Any) -> bidding.Award | None:
    """The award of a ``demand_lines`` row, None while it has none (or the line is unknown)."""
    if line is None or line.award_version is None:
        return None
    return bidding.Award(line.awarded_enterprise_id)


async def _line_for_bidding(session: AsyncSession, demand_id: uuid.UUID) -> Any:
    """The line, locked; 404 naming ``demand_id`` unless it is known here and not withdrawn."""
    line = await read_models.demand_line(session, demand_id, lock=True)
    if line is None or line.withdrawn:
        raise read_models.unknown_demand_line(demand_id)
    return line


async def _announce(
    session: AsyncSession, bid_id: uuid.UUID, actor: Actor, *, at: datetime, note: str | None
) -> Bid:
    """History row and event of the bid as it now stands; the bid as answered."""
    row = await repository.bid(session, bid_id)
    assert row is not None, "the bid was written in this transaction"
    await repository.add_bid_history(
        session,
        bid_id=bid_id,
        version=row.version,
        status=row.status,
        role=row.role,
        partners=list(row.partners),
        contract_value_pence=row.contract_value_pence,
        award_check=row.award_check,
        actor_role=actor.role,
        actor=actor.actor,
        actor_subject=actor.subject_id,
        at=at,
        note=note,
    )
    enterprise = await repository.enterprise_profile(session, row.enterprise_id)
    payload = ev.BidChanged(
        bid_id=row.id,
        version=row.version,
        enterprise_id=row.enterprise_id,
        demand_id=row.demand_id,
        anchor_id=row.anchor_id,
        role=row.role,
        partners=list(row.partners),
        status=row.status,
        contract_value_pence=row.contract_value_pence,
        submitted_at=row.submitted_at,
        decided_at=row.decided_at,
        award_check=row.award_check,
        cohort_id=enterprise.cohort_id if enterprise is not None else None,
        at=at,
    )
    await publish(session, ev.BID_CHANGED, payload, str(bid_id))
    return Bid.model_validate(row)


async def create_bid(
    session: AsyncSession, enterprise_id: uuid.UUID, data: BidCreate, actor: Actor, *, warning: timedelta
) -> BidCreated:
    """A new bid of the enterprise on a public line, with the readiness gaps it has against it."""
    await load_enterprise(session, enterprise_id)
    line = await _line_for_bidding(session, data.demand_id)
    errors = bidding.state_errors(data.role, data.partners, data.status, None)
    if errors:
        raise field_errors(errors)
    existing = await repository.bid_of(session, enterprise_id, data.demand_id)
    if existing is not None:
        raise _duplicate(data.demand_id, existing)
    now = utcnow()
    submitted_at, decided_at = bidding.timestamps(None, data.status, None, None, now)
    bid_id = uuid.uuid4()
    values = {
        "id": bid_id,
        "enterprise_id": enterprise_id,
        "demand_id": data.demand_id,
        "role": data.role,
        "partners": list(data.partners),
        "status": data.status,
        "contract_value_pence": None,
        "submitted_at": submitted_at,
        "decided_at": decided_at,
        "award_check": bidding.award_check(data.status, enterprise_id, award_of(line)),
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "note": data.note,
    }
    await repository.insert_bid(session, values, _duplicate(data.demand_id, None))
    bid = await _announce(session, bid_id, actor, at=now, note=data.note)
    readiness = await assess_enterprise(
        session, enterprise_id, demand_id=data.demand_id, now=now, warning=warning
    )
    return BidCreated(**bid.model_dump(), ready=readiness.ready, open_gaps=readiness.gaps)


async def get_bid(session: AsyncSession, bid_id: uuid.UUID, principal: Principal) -> Bid:
    row = access.require_bid_reader(principal, await repository.bid(session, bid_id), bid_id)
    return Bid.model_validate(row)


async def list_bids(
    session: AsyncSession, filters: BidFilters, limit: int, cursor: str | None
) -> tuple[list[Bid], str | None]:
    rows, next_cursor = await repository.bid_page(session, filters, limit, cursor)
    return [Bid.model_validate(r) for r in rows], next_cursor


async def list_enterprise_bids(
    session: AsyncSession, enterprise_id: uuid.UUID, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Bid], str | None]:
    if not await repository.enterprise_exists(session, enterprise_id):
        raise not_found("Enterprise", enterprise_id)
    return await list_bids(session, BidFilters(status=status, enterprise_id=enterprise_id), limit, cursor)


def _status_conflict(role: str, current: str, target: str) -> Problem:
    allowed = bidding.next_statuses(role, current)
    return Problem(
        409,
        "Bid status change not allowed",
        f"A bid cannot move from {current} to {target}"
        + (f"; from {current} it may move to {', '.join(allowed)}." if allowed else f": {current} is final."),
        type="bid-transition",
        errors=[{"field": "status", "message": f"not allowed from {current}"}],
        allowed=allowed,
    )


async def update_bid(
    session: AsyncSession,
    bid_id: uuid.UUID,
    changes: dict[str, Any],
    principal: Principal,
    precondition: Precondition,
) -> Bid:
    """Change a bid's status (by the rules of ``bidding``), role, partners, value or note."""
    found = access.require_bid_editor(principal, await repository.bid(session, bid_id), bid_id)
    line = await read_models.demand_line(session, found.demand_id, lock=True)
    row = await repository.bid(session, bid_id, lock=True)
    assert row is not None, "bids are never deleted but with their enterprise"
    precondition(etag(row.version))
    status = changes.get("status", row.status)
    if status != row.status and not bidding.status_change_allowed(principal.role, row.status, status):
        raise _status_conflict(principal.role, row.status, status)
    after = {name: changes.get(name, row._mapping[name]) for name in BID_FIELDS}
    if "contract_value_pence" not in changes and status != "won":
        after["contract_value_pence"] = None  # a value belongs to a won bid only
    errors = bidding.state_errors(after["role"], after["partners"], status, after["contract_value_pence"])
    if errors:
        raise field_errors(errors)
    now = utcnow()
    after["submitted_at"], after["decided_at"] = bidding.timestamps(
        row.status, status, row.submitted_at, row.decided_at, now
    )
    after["award_check"] = bidding.award_check(status, row.enterprise_id, award_of(line))
    changed = {name: value for name, value in after.items() if row._mapping[name] != value}
    if not changed:
        return Bid.model_validate(row)
    await repository.update_bid(session, bid_id, changed | {"version": row.version + 1, "updated_at": now})
    return await _announce(session, bid_id, Actor.of(principal), at=now, note=changes.get("note"))


async def list_bid_history(
    session: AsyncSession, bid_id: uuid.UUID, principal: Principal, limit: int, cursor: str | None
) -> tuple[list[BidHistoryEntry], str | None]:
    access.require_bid_reader(principal, await repository.bid(session, bid_id), bid_id)
    rows, next_cursor = await repository.bid_history_page(session, bid_id, limit, cursor)
    items = [
        BidHistoryEntry(
            id=r.id,
            at=r.at,
            actor=Party(role=r.actor_role, actor=r.actor, subject_id=r.actor_subject),
            version=r.version,
            status=r.status,
            role=r.role,
            partners=list(r.partners),
            contract_value_pence=r.contract_value_pence,
            award_check=r.award_check,
            note=r.note,
        )
        for r in rows
    ]
    return items, next_cursor


# --- awards ----------------------------------------------------------------------------------


def _spelled_for(legal_form: str, raw: str) -> str | None:
    try:
        return normalise_registration_number(legal_form, raw)
    except ValueError:
        return None


async def awarded_enterprise(
    session: AsyncSession, enterprise_id: uuid.UUID | None, registration_number: str | None
) -> uuid.UUID | None:
    """The enterprise an award names: by its id if it is one of ours, else the one enterprise
    registered under the supplier's number (as its legal form spells it), else none."""
    if enterprise_id is not None and await repository.enterprise_exists(session, enterprise_id):
        return enterprise_id
    spellings = registration_number_spellings(registration_number)
    if registration_number is None or not spellings:
        return None
    holders = [
        r.id
        for r in await repository.enterprises_registered_as(session, sorted(spellings))
        if _spelled_for(r.legal_form, registration_number) == r.registration_number
    ]
    return holders[0] if len(holders) == 1 else None


async def record_award(
    session: AsyncSession,
    demand_id: uuid.UUID,
    *,
    version: int,
    anchor_id: uuid.UUID | None,
    supplier_name: str,
    registration_number: str | None,
    enterprise_id: uuid.UUID | None,
    value_pence: int,
    awarded_on: date,
) -> None:
    """Keep the award of a line (unless a newer one is kept) and recheck every bid on it."""
    compact = "".join((registration_number or "").split()).upper()[:20] or None
    award = read_models.AwardIn(
        version=version,
        anchor_id=anchor_id,
        enterprise_id=await awarded_enterprise(session, enterprise_id, registration_number),
        registration_number=compact,
        supplier_name=supplier_name,
        value_pence=value_pence,
        awarded_on=awarded_on,
    )
    await read_models.record_demand_award(session, demand_id, award)
    await recheck_bids(session, demand_id)


async def recheck_bids(session: AsyncSession, demand_id: uuid.UUID) -> int:
    """Recompute ``award_check`` of every bid on a line from the award kept; each that changes
    gets a new version, a history row and an event. Returns how many changed."""
    line = await read_models.demand_line(session, demand_id)
    award = award_of(line)
    now = utcnow()
    changed = 0
    for row in await repository.bids_on_line(session, demand_id):
        check = bidding.award_check(row.status, row.enterprise_id, award)
        if check == row.award_check:
            continue
        await repository.update_bid(
            session, row.id, {"award_check": check, "version": row.version + 1, "updated_at": now}
        )
        note = f"award of the line (version {line.award_version}) to {line.awarded_supplier_name}"
        await _announce(session, row.id, AWARD, at=now, note=note)
        changed += 1
    return changed
