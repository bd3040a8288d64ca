"""The queries of the enterprises service, by table; the use cases in ``service/`` call them.

They read and write rows and never decide anything: not-found answers, rules and events are
the use cases' business. A little over 500 lines: one section per table, bids the newest.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises.models import (
    bid_history,
    bids,
    cohorts,
    demand_lines,
    enterprise_cpv_codes,
    enterprise_milestones,
    enterprises,
    history,
    milestone_definitions,
)
from shared import cpv
from shared.db import is_postgres
from shared.pagination import Key, Keyset
from shared.problems import Problem

Row = sa.Row[Any]


async def write_unique(session: AsyncSession, statement: sa.Executable, taken: Problem) -> None:
    """Run an INSERT or UPDATE that a unique index guards; ``taken`` when another request won
    the race between our check and our write (the check alone cannot see uncommitted rows)."""
    try:
        async with session.begin_nested():
            await session.execute(statement)
    except IntegrityError as exc:
        raise taken from exc


# --- enterprises -----------------------------------------------------------------------------

ENTERPRISE_COLUMNS = [c for c in enterprises.c if not c.name.startswith("readiness_")]
ENTERPRISE_ORDER = Keyset(enterprises.c.created_at, enterprises.c.id)


@dataclass(frozen=True)
class EnterpriseFilters:
    stage: str | None = None
    cohort_id: uuid.UUID | None = None
    legal_form: str | None = None
    cpv: str | None = None
    q: str | None = None
    size_class: str | None = None
    vcse: bool | None = None
    ready: bool | None = None


async def enterprise(session: AsyncSession, enterprise_id: uuid.UUID, *, lock: bool = False) -> Row | None:
    """The whole row (readiness columns included), locked for the transaction with ``lock``."""
    query = sa.select(enterprises).where(enterprises.c.id == enterprise_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def enterprise_profile(session: AsyncSession, enterprise_id: uuid.UUID) -> Row | None:
    query = sa.select(*ENTERPRISE_COLUMNS).where(enterprises.c.id == enterprise_id)
    return (await session.execute(query)).first()


async def enterprise_exists(session: AsyncSession, enterprise_id: uuid.UUID) -> bool:
    found = await session.scalar(sa.select(sa.literal(1)).where(enterprises.c.id == enterprise_id))
    return found is not None


async def enterprise_registered_as(
    session: AsyncSession, number: str, except_id: uuid.UUID | None = None
) -> uuid.UUID | None:
    query = sa.select(enterprises.c.id).where(enterprises.c.registration_number == number)
    if except_id is not None:
        query = query.where(enterprises.c.id != except_id)
    return await session.scalar(query)


async def insert_enterprise(session: AsyncSession, values: dict[str, Any], taken: Problem) -> None:
    await write_unique(session, sa.insert(enterprises).values(**values), taken)


async def update_enterprise(
    session: AsyncSession, enterprise_id: uuid.UUID, values: dict[str, Any], taken: Problem
) -> None:
    await write_unique(
        session, sa.update(enterprises).where(enterprises.c.id == enterprise_id).values(**values), taken
    )


async def replace_cpv_codes(session: AsyncSession, enterprise_id: uuid.UUID, codes: Sequence[str]) -> None:
    """Index the enterprise's CPV codes by their base code, for the prefix filter."""
    await session.execute(
        sa.delete(enterprise_cpv_codes).where(enterprise_cpv_codes.c.enterprise_id == enterprise_id)
    )
    bases = sorted({cpv.base(code) for code in codes})
    if bases:
        await session.execute(
            sa.insert(enterprise_cpv_codes), [{"enterprise_id": enterprise_id, "code": b} for b in bases]
        )


def enterprise_list_query(filters: EnterpriseFilters, limit: int, after: Key | None) -> sa.Select[Any]:
    """The SELECT of one page of enterprises (also what the benchmark compares against)."""
    e = enterprises.c
    query = ENTERPRISE_ORDER.select(sa.select(*ENTERPRISE_COLUMNS), after, limit)
    if filters.stage is not None:
        query = query.where(e.stage == filters.stage)
    if filters.cohort_id is not None:
        query = query.where(e.cohort_id == filters.cohort_id)
    if filters.legal_form is not None:
        query = query.where(e.legal_form == filters.legal_form)
    if filters.size_class is not None:
        query = query.where(e.size_class == filters.size_class)
    if filters.vcse is not None:
        query = query.where(e.vcse.is_(filters.vcse))
    if filters.ready is not None:
        query = query.where(e.readiness_ready.is_(filters.ready))
    if filters.q:
        query = query.where(sa.func.lower(e.name).contains(filters.q.lower(), autoescape=True))
    if filters.cpv:
        query = query.where(
            sa.exists().where(
                enterprise_cpv_codes.c.enterprise_id == e.id,
                enterprise_cpv_codes.c.code.startswith(filters.cpv, autoescape=True),
            )
        )
    return query


async def enterprise_page(
    session: AsyncSession, filters: EnterpriseFilters, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """One page of enterprises in creation order, and the next cursor."""
    query = enterprise_list_query(filters, limit + 1, ENTERPRISE_ORDER.decode(cursor))
    return ENTERPRISE_ORDER.cut((await session.execute(query)).all(), limit)


# --- readiness columns of enterprises --------------------------------------------------------


async def mark_all_readiness_stale(session: AsyncSession) -> None:
    """Every enterprise's readiness needs recomputing (the readiness job does it in batches)."""
    await session.execute(sa.update(enterprises).values(readiness_stale=True))


async def clear_readiness_stale(session: AsyncSession, enterprise_ids: Sequence[uuid.UUID]) -> None:
    await session.execute(
        sa.update(enterprises).where(enterprises.c.id.in_(enterprise_ids)).values(readiness_stale=False)
    )


async def store_readiness(
    session: AsyncSession, enterprise_id: uuid.UUID, *, digest: str, score: float, ready: bool
) -> int:
    """Store a new readiness result; its version, incremented in the UPDATE so that two
    writers never hand out the same one."""
    version = await session.scalar(
        sa.update(enterprises)
        .where(enterprises.c.id == enterprise_id)
        .values(
            readiness_version=enterprises.c.readiness_version + 1,
            readiness_digest=digest,
            readiness_score=score,
            readiness_ready=ready,
            readiness_stale=False,
        )
        .returning(enterprises.c.readiness_version)
    )
    return int(version or 0)


async def store_readiness_batch(session: AsyncSession, changed: list[dict[str, Any]]) -> None:
    """Store readiness results of rows this transaction holds locked: dicts of ``row_id``,
    ``new_version``, ``new_digest``, ``new_score`` and ``new_ready``."""
    await session.execute(
        sa.update(enterprises)
        .where(enterprises.c.id == sa.bindparam("row_id"))
        .values(
            readiness_version=sa.bindparam("new_version"),
            readiness_digest=sa.bindparam("new_digest"),
            readiness_score=sa.bindparam("new_score"),
            readiness_ready=sa.bindparam("new_ready"),
            readiness_stale=False,
        ),
        changed,
        execution_options={"synchronize_session": False},
    )


async def claim_stale_enterprises(session: AsyncSession, batch: int) -> list[Row]:
    """Up to ``batch`` enterprises whose readiness is stale, locked; on PostgreSQL other
    replicas skip them (SQLite serializes write transactions)."""
    claim = (
        sa.select(enterprises)
        .where(enterprises.c.readiness_stale.is_(True))
        .order_by(enterprises.c.id)
        .limit(batch)
    )
    if is_postgres(session):
        claim = claim.with_for_update(skip_locked=True)
    return list((await session.execute(claim)).all())


# --- history ---------------------------------------------------------------------------------


async def add_history(session: AsyncSession, **values: Any) -> None:
    await session.execute(sa.insert(history).values(**values))


HISTORY_ORDER = Keyset(history.c.id)


async def history_page(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    milestone_code: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row], str | None]:
    h = history.c
    query = sa.select(history).where(h.enterprise_id == enterprise_id)
    if milestone_code is not None:
        query = query.where(h.milestone_code == milestone_code)
    return await HISTORY_ORDER.page(session, query, cursor, limit)


# --- cohorts ---------------------------------------------------------------------------------


def _cohorts_with_counts() -> sa.Select[Any]:
    counts = (
        sa.select(enterprises.c.cohort_id, sa.func.count().label("n"))
        .where(enterprises.c.cohort_id.is_not(None))
        .group_by(enterprises.c.cohort_id)
        .subquery()
    )
    return sa.select(cohorts, sa.func.coalesce(counts.c.n, 0).label("enterprises_count")).outerjoin(
        counts, counts.c.cohort_id == cohorts.c.id
    )


async def cohort_exists(session: AsyncSession, cohort_id: uuid.UUID) -> bool:
    found = await session.scalar(sa.select(sa.literal(1)).where(cohorts.c.id == cohort_id))
    return found is not None


async def cohort_named(session: AsyncSession, name: str) -> uuid.UUID | None:
    return await session.scalar(sa.select(cohorts.c.id).where(cohorts.c.name == name))


async def insert_cohort(session: AsyncSession, values: dict[str, Any], taken: Problem) -> None:
    await write_unique(session, sa.insert(cohorts).values(**values), taken)


async def cohort(session: AsyncSession, cohort_id: uuid.UUID) -> Row | None:
    """A cohort with its ``enterprises_count``."""
    return (await session.execute(_cohorts_with_counts().where(cohorts.c.id == cohort_id))).first()


COHORT_ORDER = Keyset(cohorts.c.created_at, cohorts.c.id)


async def cohort_page(session: AsyncSession, limit: int, cursor: str | None) -> tuple[list[Row], str | None]:
    return await COHORT_ORDER.page(session, _cohorts_with_counts(), cursor, limit)


# --- milestone catalogue ---------------------------------------------------------------------


async def catalogue(session: AsyncSession) -> list[Row]:
    """Every milestone definition, in catalogue order."""
    d = milestone_definitions.c
    return list((await session.execute(sa.select(milestone_definitions).order_by(d.position, d.code))).all())


DEFINITION_ORDER = Keyset(milestone_definitions.c.position, milestone_definitions.c.code)


async def definition_page(
    session: AsyncSession, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    return await DEFINITION_ORDER.page(session, sa.select(milestone_definitions), cursor, limit)


async def definition(session: AsyncSession, code: str, *, lock: bool = False) -> Row | None:
    query = sa.select(milestone_definitions).where(milestone_definitions.c.code == code)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def last_definition_position(session: AsyncSession) -> int:
    return (await session.scalar(sa.select(sa.func.max(milestone_definitions.c.position)))) or 0


async def insert_definition(session: AsyncSession, values: dict[str, Any], taken: Problem) -> None:
    await write_unique(session, sa.insert(milestone_definitions).values(**values), taken)


async def update_definition(session: AsyncSession, code: str, values: dict[str, Any]) -> None:
    await session.execute(
        sa.update(milestone_definitions).where(milestone_definitions.c.code == code).values(**values)
    )


# --- enterprise milestones -------------------------------------------------------------------


async def milestones_of(session: AsyncSession, enterprise_id: uuid.UUID) -> list[Row]:
    m = enterprise_milestones.c
    query = sa.select(enterprise_milestones).where(m.enterprise_id == enterprise_id)
    return list((await session.execute(query)).all())


async def milestone(
    session: AsyncSession, enterprise_id: uuid.UUID, code: str, *, lock: bool = False
) -> Row | None:
    m = enterprise_milestones.c
    query = sa.select(enterprise_milestones).where(m.enterprise_id == enterprise_id, m.code == code)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def milestone_states(session: AsyncSession, enterprise_ids: Sequence[uuid.UUID]) -> list[Row]:
    """The columns readiness reads, of every milestone of the enterprises."""
    m = enterprise_milestones.c
    query = sa.select(
        m.enterprise_id,
        m.code,
        m.status,
        m.expires_at,
        m.value_pence,
        m.standing_verified_at,
        m.standing_expires_at,
        m.standing_value_pence,
    ).where(m.enterprise_id.in_(enterprise_ids))
    return list((await session.execute(query)).all())


async def insert_milestone(
    session: AsyncSession, enterprise_id: uuid.UUID, code: str, values: dict[str, Any]
) -> None:
    await session.execute(
        sa.insert(enterprise_milestones).values(enterprise_id=enterprise_id, code=code, **values)
    )


async def update_milestone(
    session: AsyncSession, enterprise_id: uuid.UUID, code: str, values: dict[str, Any]
) -> None:
    m = enterprise_milestones.c
    await session.execute(
        sa.update(enterprise_milestones)
        .where(m.enterprise_id == enterprise_id, m.code == code)
        .values(**values)
    )


# --- expiry ----------------------------------------------------------------------------------


def verification_columns(standing: bool) -> tuple[sa.ColumnElement[bool], Any, Any]:
    """What marks a verification, its expiry and its warned flag: the milestone's own, or the
    standing one kept while its renewal awaits review."""
    m = enterprise_milestones.c
    if standing:
        return m.standing_verified_at.is_not(None), m.standing_expires_at, m.standing_expiry_warned
    return m.status == "verified", m.expires_at, m.expiry_warned


async def enterprises_with_due_milestones(
    session: AsyncSession, due: Sequence[sa.ColumnElement[bool]], expiry: Any, batch: int
) -> list[uuid.UUID]:
    """Up to ``batch`` enterprises with ``due`` milestones, the soonest ``expiry`` first."""
    m = enterprise_milestones.c
    query = (
        sa.select(m.enterprise_id)
        .where(*due)
        .group_by(m.enterprise_id)
        .order_by(sa.func.min(expiry), m.enterprise_id)
        .limit(batch)
    )
    return list((await session.execute(query)).scalars())


async def claim_enterprises(session: AsyncSession, enterprise_ids: Sequence[uuid.UUID]) -> list[Row]:
    """Lock the enterprises in id order; on PostgreSQL skip those another transaction holds."""
    lock = sa.select(enterprises).where(enterprises.c.id.in_(enterprise_ids)).order_by(enterprises.c.id)
    if is_postgres(session):
        lock = lock.with_for_update(skip_locked=True)
    return list((await session.execute(lock)).all())


async def due_milestones(
    session: AsyncSession, enterprise_id: uuid.UUID, due: Sequence[sa.ColumnElement[bool]]
) -> list[Row]:
    m = enterprise_milestones.c
    query = sa.select(enterprise_milestones).where(m.enterprise_id == enterprise_id, *due).order_by(m.code)
    return list((await session.execute(query)).all())


async def claim_due_milestone(
    session: AsyncSession,
    row: Row,
    due: Sequence[sa.ColumnElement[bool]],
    values: dict[str, Any],
    now: datetime,
) -> bool:
    """Apply ``values`` if the milestone is still at the version read and still due: whoever
    changes it announces it, so it is announced once."""
    m = enterprise_milestones.c
    result = await session.execute(
        sa.update(enterprise_milestones)
        .where(m.enterprise_id == row.enterprise_id, m.code == row.code, m.version == row.version, *due)
        .values(**values, version=m.version + 1, updated_at=now)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


# --- bids ------------------------------------------------------------------------------------

BID_ORDER = Keyset(bids.c.created_at, bids.c.id)
BID_HISTORY_ORDER = Keyset(bid_history.c.id)
# A bid with the anchor of its line and whether that line has an award, for access and answers.
BID_WITH_LINE = sa.select(
    bids, demand_lines.c.anchor_id, demand_lines.c.award_version.is_not(None).label("awarded")
).outerjoin(demand_lines, demand_lines.c.demand_id == bids.c.demand_id)


@dataclass(frozen=True)
class BidFilters:
    status: str | None = None
    demand_id: uuid.UUID | None = None
    enterprise_id: uuid.UUID | None = None
    visible_to_enterprise: uuid.UUID | None = None  # only this enterprise's bids
    anchor_id: uuid.UUID | None = None  # only bids on this anchor's lines that have an award


async def bid(session: AsyncSession, bid_id: uuid.UUID, *, lock: bool = False) -> Row | None:
    """The bid with ``anchor_id`` and ``awarded`` of its line; ``lock`` locks the bid's row."""
    query = BID_WITH_LINE.where(bids.c.id == bid_id)
    if lock:
        query = query.with_for_update(of=bids)
    return (await session.execute(query)).first()


async def bid_of(session: AsyncSession, enterprise_id: uuid.UUID, demand_id: uuid.UUID) -> uuid.UUID | None:
    query = sa.select(bids.c.id).where(bids.c.enterprise_id == enterprise_id, bids.c.demand_id == demand_id)
    return await session.scalar(query)


async def bids_on_line(session: AsyncSession, demand_id: uuid.UUID) -> list[Row]:
    """Every bid on a line, locked, in id order (the order every writer locks them in)."""
    query = BID_WITH_LINE.where(bids.c.demand_id == demand_id).order_by(bids.c.id).with_for_update(of=bids)
    return list((await session.execute(query)).all())


async def insert_bid(session: AsyncSession, values: dict[str, Any], taken: Problem) -> None:
    await write_unique(session, sa.insert(bids).values(**values), taken)


async def update_bid(session: AsyncSession, bid_id: uuid.UUID, values: dict[str, Any]) -> None:
    await session.execute(sa.update(bids).where(bids.c.id == bid_id).values(**values))


async def bid_page(
    session: AsyncSession, filters: BidFilters, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """One page of bids in creation order, and the next cursor."""
    query = BID_WITH_LINE
    if filters.status is not None:
        query = query.where(bids.c.status == filters.status)
    if filters.demand_id is not None:
        query = query.where(bids.c.demand_id == filters.demand_id)
    if filters.enterprise_id is not None:
        query = query.where(bids.c.enterprise_id == filters.enterprise_id)
    if filters.visible_to_enterprise is not None:
        query = query.where(bids.c.enterprise_id == filters.visible_to_enterprise)
    if filters.anchor_id is not None:
        c = demand_lines.c
        query = query.where(c.anchor_id == filters.anchor_id, c.award_version.is_not(None))
    return await BID_ORDER.page(session, query, cursor, limit)


async def add_bid_history(session: AsyncSession, **values: Any) -> None:
    await session.execute(sa.insert(bid_history).values(**values))


async def bid_history_page(
    session: AsyncSession, bid_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    query = sa.select(bid_history).where(bid_history.c.bid_id == bid_id)
    return await BID_HISTORY_ORDER.page(session, query, cursor, limit)


async def enterprises_registered_as(session: AsyncSession, numbers: Sequence[str]) -> list[Row]:
    """The enterprises holding any of ``numbers``, with their legal form."""
    e = enterprises.c
    query = sa.select(e.id, e.legal_form, e.registration_number).where(e.registration_number.in_(numbers))
    return list((await session.execute(query)).all())
