"""Enterprises: registration, profile changes and stage moves."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import events as ev
from services.enterprises import lifecycle, readiness, repository
from services.enterprises.actors import Actor
from services.enterprises.identifiers import normalise_registration_number
from services.enterprises.repository import EnterpriseFilters
from services.enterprises.schemas import Enterprise, EnterpriseCreate
from services.enterprises.service import Precondition, publish
from services.enterprises.service.assessment import facts_of, milestone_states, refresh_readiness
from services.enterprises.service.catalogue import readiness_definitions
from services.enterprises.service.history import diff, jsonable, record
from services.enterprises.sizing import size_class
from shared.db import utcnow
from shared.http import etag
from shared.problems import Problem, conflict, field_errors, not_found

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
    "size_class",
)
"""The fields readiness rules look at: a change of one recomputes readiness."""


async def load_enterprise(session: AsyncSession, enterprise_id: uuid.UUID, *, lock: bool = False) -> Any:
    row = await repository.enterprise(session, enterprise_id, lock=lock)
    if row is None:
        raise not_found("Enterprise", enterprise_id)
    return row


def _snapshot(row: Any) -> dict[str, Any]:
    """The fields of ``EnterpriseSnapshot`` from an enterprise row."""
    return {
        name: getattr(row, name) for name in ev.EnterpriseSnapshot.model_fields if name != "enterprise_id"
    } | {
        "enterprise_id": row.id,
        "cpv_codes": list(row.cpv_codes),
    }


async def get_enterprise(session: AsyncSession, enterprise_id: uuid.UUID) -> Enterprise:
    row = await repository.enterprise_profile(session, enterprise_id)
    if row is None:
        raise not_found("Enterprise", enterprise_id)
    return Enterprise.model_validate(row)


async def _cohort_errors(session: AsyncSession, cohort_id: uuid.UUID | None) -> list[dict[str, str]]:
    if cohort_id is None or await repository.cohort_exists(session, cohort_id):
        return []
    return [{"field": "cohort_id", "message": f"no cohort with id {cohort_id}"}]


def _registration_errors(legal_form: str, number: str | None) -> tuple[str | None, list[dict[str, str]]]:
    try:
        return normalise_registration_number(legal_form, number), []
    except ValueError as exc:
        return None, [{"field": "registration_number", "message": str(exc)}]


def _registration_conflict(number: str | None, other: object = None) -> Problem:
    detail = f"Registration number {number} is already used by " + (
        f"enterprise {other}." if other else "another enterprise."
    )
    extra = {"enterprise_id": str(other)} if other else {}
    return conflict(
        detail, errors=[{"field": "registration_number", "message": "already registered here"}], **extra
    )


async def _registration_taken(
    session: AsyncSession, number: str | None, except_id: uuid.UUID | None = None
) -> None:
    if number is None:
        return
    other = await repository.enterprise_registered_as(session, number, except_id)
    if other is not None:
        raise _registration_conflict(number, other)


async def create_enterprise(
    session: AsyncSession, data: EnterpriseCreate, actor: Actor, *, warning: timedelta
) -> Enterprise:
    number, errors = _registration_errors(data.legal_form, data.registration_number)
    errors += await _cohort_errors(session, data.cohort_id)
    if data.stage not in CREATION_STAGES:
        errors.append({"field": "stage", "message": "a new enterprise starts as applicant or incubating"})
    if errors:
        raise field_errors(errors)
    await _registration_taken(session, number)
    now = utcnow()
    enterprise_id = uuid.uuid4()
    values = data.model_dump() | {
        "id": enterprise_id,
        "registration_number": number,
        "size_class": size_class(data.employees, data.turnover_pence),
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    await repository.insert_enterprise(session, values, _registration_conflict(number))
    await repository.replace_cpv_codes(session, enterprise_id, data.cpv_codes)
    row = await load_enterprise(session, enterprise_id)
    registered = {
        k: {"from": None, "to": v}
        for k, v in jsonable(data.model_dump()).items()
        if v not in (None, [], False)
    }
    registered["registration_number"] = {"from": None, "to": number}
    await record(session, enterprise_id, actor, "registered", registered, at=now)
    await publish(
        session, ev.ENTERPRISE_REGISTERED, ev.EnterpriseSnapshot(**_snapshot(row)), str(enterprise_id)
    )
    await refresh_readiness(session, row, await repository.catalogue(session), now=now, warning=warning)
    return Enterprise.model_validate(row)


async def list_enterprises(
    session: AsyncSession, filters: EnterpriseFilters, limit: int, cursor: str | None
) -> tuple[list[Enterprise], str | None]:
    """One page of enterprises and the next cursor."""
    rows, next_cursor = await repository.enterprise_page(session, filters, limit, cursor)
    return [Enterprise.model_validate(r) for r in rows], next_cursor


async def _check_stage_change(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    after: dict[str, Any],
    from_stage: str,
    to_stage: str,
    catalogue: list[Any],
    *,
    now: datetime,
    warning: timedelta,
) -> None:
    """409 unless the stage move is allowed, and the enterprise ready when it is to tender_ready."""
    if not lifecycle.stage_change_allowed(from_stage, to_stage):
        raise Problem(
            409,
            "Stage change not allowed",
            f"An enterprise cannot move from {from_stage} to {to_stage}.",
            type="stage-transition",
            allowed=lifecycle.next_stages(from_stage),
        )
    if to_stage != "tender_ready":
        return
    states = (await milestone_states(session, [enterprise_id])).get(enterprise_id, [])
    requirements = readiness.overall_requirements(facts_of(after), readiness_definitions(catalogue))
    result = readiness.assess(states, requirements, now=now, warning=warning)
    if not result.ready:
        raise Problem(
            409,
            "Not tender ready",
            "Every core milestone that applies must be verified and unexpired first; "
            f"missing: {', '.join(result.missing)}.",
            type="not-tender-ready",
            missing=list(result.missing),
        )


async def update_enterprise(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    changes: dict[str, Any],
    actor: Actor,
    precondition: Precondition,
    *,
    warning: timedelta,
) -> Enterprise:
    row = await load_enterprise(session, enterprise_id, lock=True)
    precondition(etag(row.version))
    before = dict(row._mapping)
    after = {name: changes.get(name, before[name]) for name in (*PROFILE_FIELDS, *STAFF_ONLY_FIELDS)}
    errors: list[dict[str, str]] = []
    if "registration_number" in changes or "legal_form" in changes:
        after["registration_number"], errors = _registration_errors(
            after["legal_form"], after["registration_number"]
        )
    if "cohort_id" in changes:
        errors += await _cohort_errors(session, after["cohort_id"])
    if errors:
        raise field_errors(errors)
    after["size_class"] = size_class(after["employees"], after["turnover_pence"])
    changed = diff(before, after)
    if not changed:
        return Enterprise.model_validate(row)
    if "registration_number" in changed:
        await _registration_taken(session, after["registration_number"], enterprise_id)
    catalogue = await repository.catalogue(session)
    now = utcnow()
    from_stage, to_stage = before["stage"], after["stage"]
    stage_changed = from_stage != to_stage
    if stage_changed:
        await _check_stage_change(
            session, enterprise_id, after, from_stage, to_stage, catalogue, now=now, warning=warning
        )
    values = {name: after[name] for name in changed} | {"version": before["version"] + 1, "updated_at": now}
    await repository.update_enterprise(
        session, enterprise_id, values, _registration_conflict(after["registration_number"])
    )
    if "cpv_codes" in changed:
        await repository.replace_cpv_codes(session, enterprise_id, after["cpv_codes"])
    row = await load_enterprise(session, enterprise_id)
    action = "stage_changed" if stage_changed else "updated"
    await record(session, enterprise_id, actor, action, changed, at=now)
    snapshot = _snapshot(row)
    if stage_changed:
        payload: BaseModel = ev.EnterpriseStageChanged(**snapshot, from_stage=from_stage, to_stage=to_stage)
        await publish(session, ev.ENTERPRISE_STAGE_CHANGED, payload, str(enterprise_id))
    else:
        await publish(session, ev.ENTERPRISE_UPDATED, ev.EnterpriseSnapshot(**snapshot), str(enterprise_id))
    if any(name in changed for name in FACT_FIELDS):
        await refresh_readiness(session, row, catalogue, now=now, warning=warning)
    return Enterprise.model_validate(row)
