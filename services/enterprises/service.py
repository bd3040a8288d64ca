"""Use cases of the enterprises service.

They take a session, change state and add outbox events; they never commit. Each
state change writes its history entry and its events in the caller's transaction,
and recomputes the enterprise's overall readiness (announcing it when it changed).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import events as ev
from services.enterprises import lifecycle, readiness
from services.enterprises.identifiers import normalise_registration_number
from services.enterprises.models import (
    STANDING_FIELDS,
    cohorts,
    demand_lines,
    enterprise_cpv_codes,
    enterprise_milestones,
    enterprises,
    history,
    milestone_definitions,
)
from services.enterprises.schemas import (
    Cohort,
    CohortCreate,
    Enterprise,
    EnterpriseCreate,
    EnterpriseMilestone,
    GapOut,
    HistoryEntry,
    MilestoneDefinition,
    MilestoneDefinitionCreate,
    MilestoneUpdate,
    Party,
    ReadinessOut,
    StandingVerification,
    VerifiedOut,
)
from services.enterprises.sizing import size_class
from shared import cpv, outbox
from shared.db import utcnow
from shared.events import new_event
from shared.http import decode_cursor, encode_cursor, etag
from shared.principal import Principal
from shared.problems import Problem, conflict, field_errors, forbidden, not_found

Precondition = Callable[[str], None]
"""Called with the current ETag before a change (``If-Match``: raises 412 on mismatch)."""

PROFILE_FIELDS = (
    "name",
    "legal_form",
    "registration_number",
    "postcode",
    "cpv_codes",
    "max_contract_value_pence",
    "employees",
    "turnover_pence",
    "vcse",
    "handles_personal_data",
    "works_with_public",
    "works_with_vulnerable_people",
    "provides_professional_advice",
    "description",
    "website",
)
STAFF_ONLY_FIELDS = ("stage", "cohort_id")
CREATION_STAGES = ("applicant", "incubating")
FACT_FIELDS = (
    "legal_form",
    "employees",
    "turnover_pence",
    "max_contract_value_pence",
    "cpv_codes",
    "vcse",
    "handles_personal_data",
    "works_with_public",
    "works_with_vulnerable_people",
    "provides_professional_advice",
)


@dataclass(frozen=True)
class Actor:
    """Who caused a change, for histories, events and the four-eyes rule."""

    role: str
    actor: str
    subject_id: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.role, principal.actor, principal.subject_id)


SYSTEM = Actor("system", "expiry-job")


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _event(type_: str, payload: BaseModel, subject: str) -> Any:
    return new_event(type_, payload, source=ev.SOURCE, subject=subject)


async def _history(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    actor: Actor,
    action: str,
    changes: dict[str, Any],
    *,
    code: str | None = None,
    note: str | None = None,
    at: datetime | None = None,
) -> None:
    await session.execute(
        sa.insert(history).values(
            enterprise_id=enterprise_id,
            at=at or utcnow(),
            actor_role=actor.role,
            actor=actor.actor,
            actor_subject=actor.subject_id,
            milestone_code=code,
            action=action,
            changes=_jsonable(changes),
            note=note,
        )
    )


async def _write_unique(session: AsyncSession, statement: Any, taken: Problem) -> None:
    """Run an INSERT or UPDATE that a unique index guards; ``taken`` when another request won
    the race between our check and our write (the check alone cannot see uncommitted rows)."""
    try:
        async with session.begin_nested():
            await session.execute(statement)
    except IntegrityError as exc:
        raise taken from exc


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {"from": before.get(name), "to": value}
        for name, value in after.items()
        if before.get(name) != value
    }


# --- enterprises -----------------------------------------------------------------------------

ENTERPRISE_COLUMNS = [c for c in enterprises.c if not c.name.startswith("readiness_")]
# Plain str keys: SQLAlchemy's column names are a str subclass that JSON encoders handle slowly.
ENTERPRISE_FIELDS = tuple(str(c.name) for c in ENTERPRISE_COLUMNS)


def enterprise_out(row: Any) -> Enterprise:
    """A row of ``ENTERPRISE_COLUMNS`` as the API model (rows from our own table need no validation)."""
    mapping = row._mapping
    return Enterprise.model_construct(**{name: mapping[name] for name in ENTERPRISE_FIELDS})


def _snapshot(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "enterprise_id": m["id"],
        "version": m["version"],
        "name": m["name"],
        "legal_form": m["legal_form"],
        "stage": m["stage"],
        "cohort_id": m["cohort_id"],
        "postcode": m["postcode"],
        "cpv_codes": list(m["cpv_codes"]),
        "max_contract_value_pence": m["max_contract_value_pence"],
        "employees": m["employees"],
        "turnover_pence": m["turnover_pence"],
        "vcse": m["vcse"],
        "size_class": m["size_class"],
    }


def facts_of(values: Any) -> readiness.Facts:
    m = values._mapping if hasattr(values, "_mapping") else values
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


async def _load_enterprise(session: AsyncSession, enterprise_id: uuid.UUID, *, lock: bool = False) -> Any:
    query = sa.select(enterprises).where(enterprises.c.id == enterprise_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    if row is None:
        raise not_found("Enterprise", enterprise_id)
    return row


async def get_enterprise(session: AsyncSession, enterprise_id: uuid.UUID) -> Enterprise:
    row = (
        await session.execute(sa.select(*ENTERPRISE_COLUMNS).where(enterprises.c.id == enterprise_id))
    ).first()
    if row is None:
        raise not_found("Enterprise", enterprise_id)
    return enterprise_out(row)


async def _check_cohort(session: AsyncSession, cohort_id: uuid.UUID | None) -> list[dict[str, str]]:
    if cohort_id is None:
        return []
    found = await session.scalar(sa.select(sa.literal(1)).where(cohorts.c.id == cohort_id))
    return [] if found else [{"field": "cohort_id", "message": f"no cohort with id {cohort_id}"}]


def _registration_errors(legal_form: str, number: str | None) -> tuple[str | None, list[dict[str, str]]]:
    try:
        return normalise_registration_number(legal_form, number), []
    except ValueError as exc:
        return None, [{"field": "registration_number", "message": str(exc)}]


async def _registration_taken(
    session: AsyncSession, number: str | None, except_id: uuid.UUID | None = None
) -> None:
    if number is None:
        return
    query = sa.select(enterprises.c.id).where(enterprises.c.registration_number == number)
    if except_id is not None:
        query = query.where(enterprises.c.id != except_id)
    other = await session.scalar(query)
    if other is not None:
        raise _registration_conflict(number, other)


def _registration_conflict(number: str | None, other: object = None) -> Problem:
    detail = f"Registration number {number} is already used by " + (
        f"enterprise {other}." if other else "another enterprise."
    )
    extra = {"enterprise_id": str(other)} if other else {}
    return conflict(
        detail, errors=[{"field": "registration_number", "message": "already registered here"}], **extra
    )


async def _replace_cpv_codes(session: AsyncSession, enterprise_id: uuid.UUID, codes: Sequence[str]) -> None:
    await session.execute(
        sa.delete(enterprise_cpv_codes).where(enterprise_cpv_codes.c.enterprise_id == enterprise_id)
    )
    bases = sorted({cpv.base(code) for code in codes})
    if bases:
        await session.execute(
            sa.insert(enterprise_cpv_codes), [{"enterprise_id": enterprise_id, "code": b} for b in bases]
        )


async def create_enterprise(
    session: AsyncSession, data: EnterpriseCreate, actor: Actor, *, warning: timedelta
) -> Enterprise:
    number, errors = _registration_errors(data.legal_form, data.registration_number)
    errors += await _check_cohort(session, data.cohort_id)
    if data.stage not in CREATION_STAGES:
        errors.append({"field": "stage", "message": "a new enterprise starts as applicant or incubating"})
    if errors:
        raise field_errors(errors)
    await _registration_taken(session, number)
    now = utcnow()
    enterprise_id = uuid.uuid4()
    values = data.model_dump()
    values.update(
        id=enterprise_id,
        registration_number=number,
        size_class=size_class(data.employees, data.turnover_pence),
        version=1,
        created_at=now,
        updated_at=now,
    )
    await _write_unique(session, sa.insert(enterprises).values(**values), _registration_conflict(number))
    await _replace_cpv_codes(session, enterprise_id, data.cpv_codes)
    row = await _load_enterprise(session, enterprise_id)
    await _history(
        session,
        enterprise_id,
        actor,
        "registered",
        {
            k: {"from": None, "to": v}
            for k, v in _jsonable(data.model_dump()).items()
            if v not in (None, [], False)
        }
        | {"registration_number": {"from": None, "to": number}},
        at=now,
    )
    await outbox.add(
        session, _event(ev.ENTERPRISE_REGISTERED, ev.EnterpriseSnapshot(**_snapshot(row)), str(enterprise_id))
    )
    catalogue = await load_catalogue(session)
    await refresh_readiness(session, row, catalogue, now=now, warning=warning)
    return enterprise_out(row)


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


def enterprise_list_query(
    filters: EnterpriseFilters, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> sa.Select[Any]:
    """The SELECT of one page of enterprises (also what the benchmark compares against)."""
    e = enterprises.c
    query = sa.select(*ENTERPRISE_COLUMNS).order_by(e.created_at, e.id).limit(limit)
    if after is not None:
        query = query.where(sa.tuple_(e.created_at, e.id) > after)
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


async def list_enterprises(
    session: AsyncSession, filters: EnterpriseFilters, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of enterprises as plain dicts of the ``Enterprise`` fields (rows of our own
    table need no validation; the API serializes them as they are), and the next cursor."""
    after = None
    if cursor is not None:
        created_at, ident = decode_cursor(cursor, 2)
        try:
            after = (datetime.fromisoformat(created_at).astimezone(UTC), uuid.UUID(ident))
        except (TypeError, ValueError) as exc:
            raise field_errors([{"field": "cursor", "message": "not a cursor issued by this API"}]) from exc
    rows = (await session.execute(enterprise_list_query(filters, limit + 1, after))).all()
    items = [dict(zip(ENTERPRISE_FIELDS, r, strict=True)) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.created_at.isoformat(), str(last.id)])
    return items, next_cursor


async def update_enterprise(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    changes: dict[str, Any],
    actor: Actor,
    precondition: Precondition,
    *,
    warning: timedelta,
) -> Enterprise:
    row = await _load_enterprise(session, enterprise_id, lock=True)
    precondition(etag(row.version))
    before = dict(row._mapping)
    after = {name: changes.get(name, before[name]) for name in (*PROFILE_FIELDS, *STAFF_ONLY_FIELDS)}
    errors: list[dict[str, str]] = []
    if "registration_number" in changes or "legal_form" in changes:
        after["registration_number"], errors = _registration_errors(
            after["legal_form"], after["registration_number"]
        )
    if "cohort_id" in changes:
        errors += await _check_cohort(session, after["cohort_id"])
    if errors:
        raise field_errors(errors)
    after["size_class"] = size_class(after["employees"], after["turnover_pence"])
    diff = _diff(before, after)
    if not diff:
        return enterprise_out(row)
    if "registration_number" in diff:
        await _registration_taken(session, after["registration_number"], enterprise_id)
    catalogue = await load_catalogue(session)
    now = utcnow()
    from_stage, to_stage = before["stage"], after["stage"]
    if from_stage != to_stage:
        if not lifecycle.stage_change_allowed(from_stage, to_stage):
            raise Problem(
                409,
                "Stage change not allowed",
                f"An enterprise cannot move from {from_stage} to {to_stage}.",
                type="stage-transition",
                allowed=lifecycle.next_stages(from_stage),
            )
        if to_stage == "tender_ready":
            states = (await _milestone_states(session, [enterprise_id])).get(enterprise_id, [])
            result = readiness.assess(
                states,
                readiness.overall_requirements(facts_of(after), _definitions(catalogue)),
                now=now,
                warning=warning,
            )
            if not result.ready:
                raise Problem(
                    409,
                    "Not tender ready",
                    "Every core milestone that applies must be verified and unexpired first; "
                    f"missing: {', '.join(result.missing)}.",
                    type="not-tender-ready",
                    missing=list(result.missing),
                )
    values = {name: after[name] for name in diff}
    values.update(version=before["version"] + 1, updated_at=now)
    await _write_unique(
        session,
        sa.update(enterprises).where(enterprises.c.id == enterprise_id).values(**values),
        _registration_conflict(after["registration_number"]),
    )
    if "cpv_codes" in diff:
        await _replace_cpv_codes(session, enterprise_id, after["cpv_codes"])
    row = await _load_enterprise(session, enterprise_id)
    stage_changed = from_stage != to_stage
    await _history(
        session, enterprise_id, actor, "stage_changed" if stage_changed else "updated", diff, at=now
    )
    snapshot = _snapshot(row)
    if stage_changed:
        payload: BaseModel = ev.EnterpriseStageChanged(**snapshot, from_stage=from_stage, to_stage=to_stage)
        await outbox.add(session, _event(ev.ENTERPRISE_STAGE_CHANGED, payload, str(enterprise_id)))
    else:
        await outbox.add(
            session, _event(ev.ENTERPRISE_UPDATED, ev.EnterpriseSnapshot(**snapshot), str(enterprise_id))
        )
    if any(name in diff for name in FACT_FIELDS) or "size_class" in diff:
        await refresh_readiness(session, row, catalogue, now=now, warning=warning)
    return enterprise_out(row)


# --- cohorts ---------------------------------------------------------------------------------


def _cohort_out(row: Any, count: int = 0) -> Cohort:
    return Cohort(**{c.name: row._mapping[c.name] for c in cohorts.c}, enterprises_count=count)


async def create_cohort(session: AsyncSession, data: CohortCreate) -> Cohort:
    taken = conflict(
        f"A cohort named {data.name!r} exists already.",
        errors=[{"field": "name", "message": "already used by another cohort"}],
    )
    if await session.scalar(sa.select(cohorts.c.id).where(cohorts.c.name == data.name)) is not None:
        raise taken
    values = data.model_dump() | {"id": uuid.uuid4(), "version": 1, "created_at": utcnow()}
    await _write_unique(session, sa.insert(cohorts).values(**values), taken)
    row = (await session.execute(sa.select(cohorts).where(cohorts.c.id == values["id"]))).one()
    return _cohort_out(row)


def _cohort_query() -> sa.Select[Any]:
    counts = (
        sa.select(enterprises.c.cohort_id, sa.func.count().label("n"))
        .where(enterprises.c.cohort_id.is_not(None))
        .group_by(enterprises.c.cohort_id)
        .subquery()
    )
    return sa.select(cohorts, sa.func.coalesce(counts.c.n, 0).label("enterprises_count")).outerjoin(
        counts, counts.c.cohort_id == cohorts.c.id
    )


async def get_cohort(session: AsyncSession, cohort_id: uuid.UUID) -> Cohort:
    row = (await session.execute(_cohort_query().where(cohorts.c.id == cohort_id))).first()
    if row is None:
        raise not_found("Cohort", cohort_id)
    return _cohort_out(row, row.enterprises_count)


async def list_cohorts(
    session: AsyncSession, limit: int, cursor: str | None
) -> tuple[list[Cohort], str | None]:
    query = _cohort_query().order_by(cohorts.c.created_at, cohorts.c.id).limit(limit + 1)
    if cursor is not None:
        created_at, ident = decode_cursor(cursor, 2)
        try:
            after = (datetime.fromisoformat(created_at).astimezone(UTC), uuid.UUID(ident))
        except (TypeError, ValueError) as exc:
            raise field_errors([{"field": "cursor", "message": "not a cursor issued by this API"}]) from exc
        query = query.where(sa.tuple_(cohorts.c.created_at, cohorts.c.id) > after)
    rows = (await session.execute(query)).all()
    items = [_cohort_out(r, r.enterprises_count) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.created_at.isoformat(), str(last.id)])
    return items, next_cursor


# --- milestone catalogue ---------------------------------------------------------------------


async def load_catalogue(session: AsyncSession) -> list[Any]:
    query = sa.select(milestone_definitions).order_by(
        milestone_definitions.c.position, milestone_definitions.c.code
    )
    return list((await session.execute(query)).all())


def _definitions(catalogue: Iterable[Any]) -> list[readiness.Definition]:
    return [readiness.Definition(d.code, d.applies_when, d.threshold_pence, d.core) for d in catalogue]


def definition_out(row: Any) -> MilestoneDefinition:
    return MilestoneDefinition(**{name: row._mapping[name] for name in MilestoneDefinition.model_fields})


async def list_definitions(
    session: AsyncSession, limit: int, cursor: str | None
) -> tuple[list[MilestoneDefinition], str | None]:
    d = milestone_definitions.c
    query = sa.select(milestone_definitions).order_by(d.position, d.code).limit(limit + 1)
    if cursor is not None:
        position, code = decode_cursor(cursor, 2)
        if not isinstance(position, int) or not isinstance(code, str):
            raise field_errors([{"field": "cursor", "message": "not a cursor issued by this API"}])
        query = query.where(sa.tuple_(d.position, d.code) > (position, code))
    rows = (await session.execute(query)).all()
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = encode_cursor([last.position, last.code]) if last is not None else None
    return [definition_out(r) for r in rows[:limit]], next_cursor


async def get_definition(session: AsyncSession, code: str) -> Any:
    row = (
        await session.execute(sa.select(milestone_definitions).where(milestone_definitions.c.code == code))
    ).first()
    if row is None:
        raise Problem(
            404, "Milestone definition not found", f"No milestone definition {code!r}.", type="not-found"
        )
    return row


async def create_definition(
    session: AsyncSession, data: MilestoneDefinitionCreate, actor: Actor
) -> MilestoneDefinition:
    errors = readiness.rule_errors(data.applies_when)
    if errors:
        raise field_errors(errors)
    taken = conflict(
        f"A milestone definition with code {data.code!r} exists already.",
        errors=[{"field": "code", "message": "already in the catalogue"}],
    )
    d = milestone_definitions.c
    if await session.scalar(sa.select(d.code).where(d.code == data.code)) is not None:
        raise taken
    position = (await session.scalar(sa.select(sa.func.max(d.position)))) or 0
    await _write_unique(
        session,
        sa.insert(milestone_definitions).values(
            **data.model_dump(),
            builtin=False,
            position=position + 1,
            created_at=utcnow(),
            created_by=f"{actor.role}:{actor.actor}",
        ),
        taken,
    )
    if data.core:
        # Readiness of every enterprise may change; the readiness job recomputes them in batches.
        await session.execute(sa.update(enterprises).values(readiness_stale=True))
    return definition_out(await get_definition(session, data.code))


READINESS_DEFINITION_FIELDS = ("applies_when", "threshold_pence", "core")


async def update_definition(
    session: AsyncSession,
    code: str,
    changes: dict[str, Any],
    actor: Actor,
    precondition: Precondition,
) -> MilestoneDefinition:
    """Change a catalogue entry; when what decides readiness changed, every enterprise's
    readiness is recomputed by the readiness job (and announced where it changed)."""
    d = milestone_definitions.c
    row = (
        await session.execute(sa.select(milestone_definitions).where(d.code == code).with_for_update())
    ).first()
    if row is None:
        raise Problem(
            404, "Milestone definition not found", f"No milestone definition {code!r}.", type="not-found"
        )
    precondition(etag(row.version))
    if "applies_when" in changes:
        errors = readiness.rule_errors(changes["applies_when"])
        if errors:
            raise field_errors(errors)
    diff = _diff(dict(row._mapping), changes)
    if not diff:
        return definition_out(row)
    await session.execute(
        sa.update(milestone_definitions)
        .where(d.code == code)
        .values(
            **changes, version=row.version + 1, updated_at=utcnow(), updated_by=f"{actor.role}:{actor.actor}"
        )
    )
    if any(name in diff for name in READINESS_DEFINITION_FIELDS):
        await session.execute(sa.update(enterprises).values(readiness_stale=True))
    return definition_out(await get_definition(session, code))


# --- readiness -------------------------------------------------------------------------------


def _state_of(row: Any) -> readiness.MilestoneState:
    standing = None
    if row.standing_verified_at is not None:
        standing = readiness.Standing(row.standing_expires_at, row.standing_value_pence)
    return readiness.MilestoneState(row.code, row.status, row.expires_at, row.value_pence, standing)


async def _milestone_states(
    session: AsyncSession, enterprise_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[readiness.MilestoneState]]:
    m = enterprise_milestones.c
    rows = (
        await session.execute(
            sa.select(
                m.enterprise_id,
                m.code,
                m.status,
                m.expires_at,
                m.value_pence,
                m.standing_verified_at,
                m.standing_expires_at,
                m.standing_value_pence,
            ).where(m.enterprise_id.in_(enterprise_ids))
        )
    ).all()
    states: dict[uuid.UUID, list[readiness.MilestoneState]] = {}
    for row in rows:
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


async def _announce_readiness(
    session: AsyncSession, row: Any, result: readiness.Readiness, digest: str
) -> bool:
    """Store and announce a readiness result if it differs from the last one announced."""
    if row.readiness_digest == digest and not row.readiness_stale:
        return False
    if row.readiness_digest == digest:
        await session.execute(
            sa.update(enterprises).where(enterprises.c.id == row.id).values(readiness_stale=False)
        )
        return False
    # The increment happens in the UPDATE so two writers never hand out the same version.
    version = await session.scalar(
        sa.update(enterprises)
        .where(enterprises.c.id == row.id)
        .values(
            readiness_version=enterprises.c.readiness_version + 1,
            readiness_digest=digest,
            readiness_score=result.score,
            readiness_ready=result.ready,
            readiness_stale=False,
        )
        .returning(enterprises.c.readiness_version)
    )
    await outbox.add(session, _readiness_event(row.id, int(version or 0), result))
    return True


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
    return _event(ev.READINESS_CHANGED, payload, str(enterprise_id))


async def refresh_readiness(
    session: AsyncSession, row: Any, catalogue: Sequence[Any], *, now: datetime, warning: timedelta
) -> bool:
    """Recompute one enterprise's overall readiness; announce it when it changed."""
    states = (await _milestone_states(session, [row.id])).get(row.id, [])
    result = overall_readiness(row, states, _definitions(catalogue), now=now, warning=warning)
    return await _announce_readiness(session, row, result, readiness_digest(result))


async def recompute_stale_readiness(
    session: AsyncSession, *, now: datetime, warning: timedelta, batch: int = 1000
) -> tuple[int, int]:
    """Recompute one batch of enterprises marked stale by a catalogue change.

    Returns (recomputed, announced). Replicas never take the same rows: PostgreSQL
    claims them with ``FOR UPDATE SKIP LOCKED``; SQLite serializes write transactions.
    """
    claim = (
        sa.select(enterprises)
        .where(enterprises.c.readiness_stale.is_(True))
        .order_by(enterprises.c.id)
        .limit(batch)
    )
    if _is_postgres(session):
        claim = claim.with_for_update(skip_locked=True)
    rows = (await session.execute(claim)).all()
    if not rows:
        return 0, 0
    catalogue = _definitions(await load_catalogue(session))
    states = await _milestone_states(session, [r.id for r in rows])
    unchanged: list[uuid.UUID] = []
    changed: list[dict[str, Any]] = []
    announcements = []
    profiles: dict[readiness.Facts, list[readiness.Requirement]] = {}
    for row in rows:
        result = overall_readiness(
            row, states.get(row.id, []), catalogue, now=now, warning=warning, profiles=profiles
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
        e = enterprises.c
        await session.execute(
            sa.update(enterprises)
            .where(e.id == sa.bindparam("row_id"))
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
        await outbox.add_many(session, announcements)
    if unchanged:
        await session.execute(
            sa.update(enterprises).where(enterprises.c.id.in_(unchanged)).values(readiness_stale=False)
        )
    return len(rows), len(changed)


async def assess_enterprise(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    *,
    demand_id: uuid.UUID | None,
    now: datetime,
    warning: timedelta,
) -> ReadinessOut:
    row = await _load_enterprise(session, enterprise_id)
    states = (await _milestone_states(session, [enterprise_id])).get(enterprise_id, [])
    if demand_id is None:
        catalogue = _definitions(await load_catalogue(session))
        result = overall_readiness(row, states, catalogue, now=now, warning=warning)
    else:
        requirements = await demand_requirements(session, demand_id)
        result = readiness.assess(states, requirements, now=now, warning=warning)
    return ReadinessOut(
        enterprise_id=enterprise_id,
        demand_id=demand_id,
        score=result.score,
        ready=result.ready,
        missing=list(result.missing),
        expiring_soon=list(result.expiring_soon),
        verified=[
            VerifiedOut(
                code=v.code,
                expires_at=v.expires_at,
                value_pence=v.value_pence,
                renewal_pending=v.renewal_pending,
            )
            for v in result.verified
        ],
        required=list(result.required),
        gaps=[
            GapOut(
                code=g.code,
                reason=g.reason,
                required_value_pence=g.required_value_pence,
                value_pence=g.value_pence,
            )
            for g in result.gaps
        ],
        assessed_at=now,
    )


# --- enterprise milestones -------------------------------------------------------------------


def _party(role: str | None, actor: str | None, subject: str | None) -> Party | None:
    return None if role is None or actor is None else Party(role=role, actor=actor, subject_id=subject)


def _standing_out(row: Any) -> StandingVerification | None:
    if row.standing_verified_at is None:
        return None
    return StandingVerification(
        evidence=row.standing_evidence,
        value_pence=row.standing_value_pence,
        expires_at=row.standing_expires_at,
        submitted_at=row.standing_submitted_at,
        submitted_by=_party(
            row.standing_submitted_by_role, row.standing_submitted_by_actor, row.standing_submitted_by_subject
        ),
        verified_at=row.standing_verified_at,
        verified_by=_party(
            row.standing_verified_by_role, row.standing_verified_by_actor, row.standing_verified_by_subject
        ),
    )


async def list_milestones(session: AsyncSession, enterprise_id: uuid.UUID) -> list[EnterpriseMilestone]:
    row = await _load_enterprise(session, enterprise_id)
    catalogue = await load_catalogue(session)
    facts = facts_of(row)
    m = enterprise_milestones.c
    states = {
        r.code: r
        for r in (
            await session.execute(sa.select(enterprise_milestones).where(m.enterprise_id == enterprise_id))
        ).all()
    }
    items = []
    for d in catalogue:
        s = states.get(d.code)
        item = EnterpriseMilestone(
            code=d.code,
            name=d.name,
            category=d.category,
            status=s.status if s else "not_started",
            applies=d.core and readiness.applies(d.applies_when, facts),
            threshold_pence=d.threshold_pence,
        )
        if s is not None:
            item = item.model_copy(
                update={
                    "evidence": s.evidence,
                    "value_pence": s.value_pence,
                    "expires_at": s.expires_at,
                    "note": s.note,
                    "submitted_at": s.submitted_at,
                    "submitted_by": _party(s.submitted_by_role, s.submitted_by_actor, s.submitted_by_subject),
                    "verified_at": s.verified_at,
                    "verified_by": _party(s.verified_by_role, s.verified_by_actor, s.verified_by_subject),
                    "version": s.version,
                    "updated_at": s.updated_at,
                    "renewal_pending": s.standing_verified_at is not None,
                    "standing": _standing_out(s),
                }
            )
        items.append(item)
    return items


async def get_milestone(session: AsyncSession, enterprise_id: uuid.UUID, code: str) -> EnterpriseMilestone:
    for item in await list_milestones(session, enterprise_id):
        if item.code == code:
            return item
    raise Problem(
        404, "Milestone definition not found", f"No milestone definition {code!r}.", type="not-found"
    )


_NO_STANDING: dict[str, Any] = {f"standing_{name}": None for name in STANDING_FIELDS} | {
    "standing_expiry_warned": False
}


def _has_standing(row: Any) -> bool:
    """Whether a verification stands while a renewal of the milestone awaits review."""
    return row is not None and row.standing_verified_at is not None


def _submitted_by(row: Any, actor: Actor) -> bool:
    """Whether ``actor`` is who submitted the current evidence (the four-eyes rule)."""
    if row is None or row.submitted_by_actor is None:
        return False
    if row.submitted_by_actor == actor.actor and row.submitted_by_role == actor.role:
        return True
    return (
        actor.subject_id is not None
        and row.submitted_by_role == actor.role
        and row.submitted_by_subject == actor.subject_id
    )


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
    enterprise = await _load_enterprise(session, enterprise_id, lock=True)
    definition = await get_definition(session, code)
    m = enterprise_milestones.c
    row = (
        await session.execute(
            sa.select(enterprise_milestones)
            .where(m.enterprise_id == enterprise_id, m.code == code)
            .with_for_update()
        )
    ).first()
    current = row.status if row else "not_started"
    version = row.version if row else 0
    if precondition is not None:
        precondition(etag(version))
    target = update.status
    if not lifecycle.milestone_move_allowed(actor.role, current, target):
        raise Problem(
            409,
            "Milestone transition not allowed",
            f"A {actor.role} cannot move {code} from {current} to {target}.",
            type="milestone-transition",
            current_status=current,
            allowed=lifecycle.allowed_moves(actor.role, current),
        )
    values: dict[str, Any] = {"status": target, "updated_at": now}
    action: str | None = None
    event_type: str | None = None
    errors: list[dict[str, str]] = []
    if update.expires_at is not None and update.expires_at <= now:
        errors.append({"field": "expires_at", "message": "must be in the future"})
    renewing = (
        target == "submitted"
        and row is not None
        and current == "verified"
        and (row.expires_at is None or row.expires_at > now)
    )
    if renewing:
        # An early renewal: the verification stands until the renewal is reviewed or it lapses,
        # and the renewal inherits none of it (new evidence, value and expiry).
        values.update({f"standing_{name}": row._mapping[name] for name in STANDING_FIELDS})
        values.update(
            standing_expiry_warned=row.expiry_warned,
            evidence=None,
            value_pence=None,
            expires_at=None,
            note=None,
        )
    elif target in ("verified", "rejected") and _has_standing(row):
        values.update(_NO_STANDING)
    if target in ("in_progress", "submitted"):
        if update.evidence is not None:
            values["evidence"] = update.evidence.model_dump(mode="json", exclude_none=True)
        if "value_pence" in update.model_fields_set:
            values["value_pence"] = update.value_pence
        if "expires_at" in update.model_fields_set:
            values["expires_at"] = update.expires_at
        elif (
            not renewing
            and row is not None
            and (row.status == "expired" or (row.expires_at is not None and row.expires_at <= now))
        ):
            values["expires_at"] = None  # new evidence does not inherit a lapsed expiry
        if update.note is not None:
            values["note"] = update.note
    if target == "submitted":
        evidence = values.get("evidence", row.evidence if row else None)
        if not evidence:
            message = (
                "a renewal needs its new evidence: a reference or a url"
                if renewing
                else "submitting needs evidence: a reference or a url"
            )
            errors.append({"field": "evidence", "message": message})
        value = values.get("value_pence", row.value_pence if row else None)
        if definition.threshold_pence is not None and value is None:
            errors.append(
                {"field": "value_pence", "message": f"{code} needs the evidenced amount (value_pence)"}
            )
        values.update(
            submitted_at=now,
            submitted_by_role=actor.role,
            submitted_by_actor=actor.actor,
            submitted_by_subject=actor.subject_id,
            verified_at=None,
            verified_by_role=None,
            verified_by_actor=None,
            verified_by_subject=None,
            expiry_warned=False,
        )
    elif target == "verified":
        if _submitted_by(row, actor):
            raise forbidden("Nobody verifies their own submission; another reviewer must verify it.")
        if "value_pence" in update.model_fields_set:
            values["value_pence"] = update.value_pence
        expires_at = update.expires_at or (row.expires_at if row else None)
        if expires_at is None and definition.validity_days:
            expires_at = now + timedelta(days=definition.validity_days)
        if expires_at is not None and expires_at <= now and update.expires_at is None:
            errors.append(
                {"field": "expires_at", "message": "the submitted evidence has lapsed; give a new expiry"}
            )
        values.update(
            expires_at=expires_at,
            note=update.note,
            verified_at=now,
            verified_by_role=actor.role,
            verified_by_actor=actor.actor,
            verified_by_subject=actor.subject_id,
            expiry_warned=False,
        )
    elif target == "rejected":
        if not update.note:
            errors.append({"field": "note", "message": "say why it is rejected"})
        values.update(
            note=update.note,
            verified_at=None,
            verified_by_role=None,
            verified_by_actor=None,
            verified_by_subject=None,
        )
        if _has_standing(row):
            # A rejected renewal: the milestone goes back to the verification that still stands
            # (if that has lapsed meanwhile, the expiry job expires it as any verified one).
            values.update({name: row._mapping[f"standing_{name}"] for name in STANDING_FIELDS})
            values.update(status="verified", expiry_warned=row.standing_expiry_warned)
            action, event_type = "milestone_renewal_rejected", ev.MILESTONE_REJECTED
    if errors:
        raise field_errors(errors)
    values["version"] = version + 1
    if row is None:
        await session.execute(
            sa.insert(enterprise_milestones).values(enterprise_id=enterprise_id, code=code, **values)
        )
    else:
        await session.execute(
            sa.update(enterprise_milestones)
            .where(m.enterprise_id == enterprise_id, m.code == code)
            .values(**values)
        )
    if renewing:
        action = "milestone_renewal_submitted"
    await _after_milestone_change(
        session,
        enterprise,
        definition,
        row,
        actor,
        now=now,
        warning=warning,
        note=update.note,
        action=action,
        event_type=event_type,
    )
    return await get_milestone(session, enterprise_id, code)


TRACKED_MILESTONE_FIELDS = (
    "status",
    "evidence",
    "value_pence",
    "expires_at",
    "note",
    "standing_value_pence",
    "standing_expires_at",
)


async def _after_milestone_change(
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
) -> Any:
    """History, event and readiness after a milestone row changed.

    ``standing``: the event is about the standing verification of ``before`` (its expiry
    warning or lapse while a renewal awaits review), so it carries that one's expiry and value.
    """
    m = enterprise_milestones.c
    after = (
        await session.execute(
            sa.select(enterprise_milestones).where(
                m.enterprise_id == enterprise.id, m.code == definition.code
            )
        )
    ).one()
    old = {name: (before._mapping[name] if before is not None else None) for name in TRACKED_MILESTONE_FIELDS}
    if before is None:
        old["status"] = "not_started"
    new = {name: after._mapping[name] for name in TRACKED_MILESTONE_FIELDS}
    changes = _diff(_jsonable(old), _jsonable(new))
    await _history(
        session,
        enterprise.id,
        actor,
        action or f"milestone_{after.status}",
        changes,
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
            renewal_pending=standing or _has_standing(after),
        )
        await outbox.add(session, _event(event_type, payload, f"{enterprise.id}/{definition.code}"))
    if refresh:
        await refresh_readiness(session, enterprise, await load_catalogue(session), now=now, warning=warning)
    return after


async def record_mentor_sign_offs(
    session: AsyncSession, completed: ev.SessionCompletedIn, *, warning: timedelta
) -> bool:
    """A completed mentoring session: each signed-off code that is submitted becomes verified by
    the mentor; anything else is noted in the history. False when the enterprise is unknown."""
    row = (
        await session.execute(sa.select(enterprises.c.id).where(enterprises.c.id == completed.enterprise_id))
    ).first()
    if row is None:
        return False
    mentor = Actor("mentor", f"mentoring-session:{completed.session_id}", str(completed.mentor_id))
    m = enterprise_milestones.c
    for code in dict.fromkeys(completed.signed_off_milestones):
        state = (
            await session.execute(
                sa.select(enterprise_milestones).where(
                    m.enterprise_id == completed.enterprise_id, m.code == code
                )
            )
        ).first()
        status = state.status if state else "not_started"
        who = f"mentor {completed.mentor_id} (session {completed.session_id})"
        reason = None
        if status != "submitted":
            reason = f"signed off by {who}, but it was {status}, not submitted"
        elif _submitted_by(state, mentor):
            reason = f"{who} signed off evidence they submitted; another reviewer must verify it"
        known = await session.scalar(
            sa.select(milestone_definitions.c.code).where(milestone_definitions.c.code == code)
        )
        if known is None:
            reason = f"{who} signed off {code!r}, which is not in the catalogue"
        if reason is not None:
            await _history(
                session,
                completed.enterprise_id,
                mentor,
                "mentor_sign_off_noted",
                {},
                code=code if known else None,
                note=reason,
            )
            continue
        try:
            await change_milestone(
                session,
                completed.enterprise_id,
                code,
                MilestoneUpdate(
                    status="verified", note=f"signed off in mentoring session {completed.session_id}"
                ),
                mentor,
                None,
                warning=warning,
            )
        except Problem as refused:
            # Refused before anything was written (e.g. the evidence has lapsed): note why.
            await _history(
                session,
                completed.enterprise_id,
                mentor,
                "mentor_sign_off_noted",
                {},
                code=code,
                note=f"{who} signed off {code}, but it cannot be verified: {refused.detail or refused.title}",
            )
    return True


# --- expiry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryPass:
    changed: int  # milestones warned about or expired
    candidates: int  # enterprises with due milestones seen
    claimed: int  # of those, the ones this run locked and handled


async def _expiry_pass(
    session: AsyncSession,
    due: list[Any],
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
    m = enterprise_milestones.c
    expiry = _verification_columns(standing)[1]
    candidates = list(
        (
            await session.execute(
                sa.select(m.enterprise_id)
                .where(*due)
                .group_by(m.enterprise_id)
                .order_by(sa.func.min(expiry), m.enterprise_id)
                .limit(batch)
            )
        ).scalars()
    )
    if not candidates:
        return ExpiryPass(0, 0, 0)
    lock = sa.select(enterprises).where(enterprises.c.id.in_(candidates)).order_by(enterprises.c.id)
    if _is_postgres(session):
        lock = lock.with_for_update(skip_locked=True)
    claimed = (await session.execute(lock)).all()
    changed = 0
    catalogue: list[Any] | None = None
    for enterprise in claimed:
        rows = (
            await session.execute(
                sa.select(enterprise_milestones)
                .where(m.enterprise_id == enterprise.id, *due)
                .order_by(m.code)
            )
        ).all()
        announced = False
        for row in rows:
            result = await session.execute(
                sa.update(enterprise_milestones)
                .where(
                    m.enterprise_id == row.enterprise_id, m.code == row.code, m.version == row.version, *due
                )
                .values(**claim, version=m.version + 1, updated_at=now)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue
            definition = await get_definition(session, row.code)
            lapses = row._mapping[expiry.key]
            expires = lapses.isoformat() if lapses else "?"
            await _after_milestone_change(
                session,
                enterprise,
                definition,
                row,
                SYSTEM,
                now=now,
                warning=warning,
                note=note.format(expires_at=expires),
                action=action,
                event_type=event_type,
                refresh=False,
                standing=standing,
            )
            announced = True
            changed += 1
        if announced:
            catalogue = catalogue if catalogue is not None else await load_catalogue(session)
            await refresh_readiness(session, enterprise, catalogue, now=now, warning=warning)
    return ExpiryPass(changed, len(candidates), len(claimed))


def _verification_columns(standing: bool) -> tuple[sa.ColumnElement[bool], Any, Any]:
    """What marks a verification, its expiry and its warned flag: the milestone's own, or the
    standing one kept while its renewal awaits review."""
    m = enterprise_milestones.c
    if standing:
        return m.standing_verified_at.is_not(None), m.standing_expires_at, m.standing_expiry_warned
    return m.status == "verified", m.expires_at, m.expiry_warned


async def warn_expiring(
    session: AsyncSession, *, now: datetime, warning: timedelta, batch: int = 500, standing: bool = False
) -> ExpiryPass:
    """Send ``milestone.expiring`` once per verification entering the warning window.

    ``standing``: the standing verifications of milestones whose renewal awaits review; one
    that was warned of before its renewal is not warned again."""
    verified, expires_at, warned = _verification_columns(standing)
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
    verified, expires_at, _ = _verification_columns(standing)
    due = [verified, expires_at.is_not(None), expires_at <= now]
    return await _expiry_pass(
        session,
        due,
        claim=_NO_STANDING if standing else {"status": "expired"},
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


# --- history ---------------------------------------------------------------------------------


async def list_history(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    *,
    milestone_code: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[HistoryEntry], str | None]:
    await _load_enterprise(session, enterprise_id)
    h = history.c
    query = sa.select(history).where(h.enterprise_id == enterprise_id).order_by(h.id).limit(limit + 1)
    if milestone_code is not None:
        query = query.where(h.milestone_code == milestone_code)
    if cursor is not None:
        (after,) = decode_cursor(cursor, 1)
        if not isinstance(after, int):
            raise field_errors([{"field": "cursor", "message": "not a cursor issued by this API"}])
        query = query.where(h.id > after)
    rows = (await session.execute(query)).all()
    items = [
        HistoryEntry(
            id=r.id,
            at=r.at,
            actor=Party(role=r.actor_role, actor=r.actor, subject_id=r.actor_subject),
            milestone_code=r.milestone_code,
            action=r.action,
            changes=r.changes,
            note=r.note,
        )
        for r in rows[:limit]
    ]
    next_cursor = encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None
    return items, next_cursor


# --- demand read model -----------------------------------------------------------------------


async def record_demand_line(session: AsyncSession, line: ev.DemandLineIn) -> None:
    """Keep the requirements of a public demand line; drop stale or repeated versions."""
    stored = await session.scalar(
        sa.select(demand_lines.c.version).where(demand_lines.c.demand_id == line.demand_id)
    )
    if stored is not None and line.version <= stored:
        return
    values = {
        "version": line.version,
        "status": line.status[:20],
        "title": (line.title or "")[:500] or None,
        "requirements": [r.model_dump() for r in line.requirements],
        "withdrawn": line.status in ("withdrawn", "draft"),
        "updated_at": utcnow(),
    }
    if stored is None:
        await session.execute(sa.insert(demand_lines).values(demand_id=line.demand_id, **values))
    else:
        await session.execute(
            sa.update(demand_lines).where(demand_lines.c.demand_id == line.demand_id).values(**values)
        )


async def record_demand_withdrawn(session: AsyncSession, withdrawn: ev.DemandWithdrawnIn) -> None:
    stored = await session.scalar(
        sa.select(demand_lines.c.version).where(demand_lines.c.demand_id == withdrawn.demand_id)
    )
    if stored is not None and withdrawn.version <= stored:
        return
    values = {
        "version": withdrawn.version,
        "status": withdrawn.status[:20],
        "withdrawn": True,
        "updated_at": utcnow(),
    }
    if stored is None:
        await session.execute(
            sa.insert(demand_lines).values(
                demand_id=withdrawn.demand_id, requirements=[], title=None, **values
            )
        )
    else:
        await session.execute(
            sa.update(demand_lines).where(demand_lines.c.demand_id == withdrawn.demand_id).values(**values)
        )


async def demand_requirements(session: AsyncSession, demand_id: uuid.UUID) -> list[readiness.Requirement]:
    row = (
        await session.execute(sa.select(demand_lines).where(demand_lines.c.demand_id == demand_id))
    ).first()
    if row is None or row.withdrawn:
        raise Problem(
            404,
            "Demand line not found",
            f"No public demand line {demand_id} is known here (it may not be published yet).",
            type="not-found",
        )
    return [readiness.Requirement(r["code"], r.get("min_value_pence")) for r in row.requirements]
