"""HTTP routes of the enterprises service: validation and authorization only, no SQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel
from pydantic_core import to_json

from services.enterprises import access, service
from services.enterprises.events import LegalForm, StageName
from services.enterprises.schemas import (
    Cohort,
    CohortCreate,
    CohortPage,
    Enterprise,
    EnterpriseCreate,
    EnterpriseMilestone,
    EnterpriseMilestonePage,
    EnterprisePage,
    EnterpriseUpdate,
    HistoryPage,
    MilestoneDefinition,
    MilestoneDefinitionCreate,
    MilestoneDefinitionPage,
    MilestoneDefinitionUpdate,
    MilestoneUpdate,
    ReadinessOut,
)
from services.enterprises.service import Actor, EnterpriseFilters
from shared.db import SessionDep, utcnow
from shared.http import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, check_if_match, etag
from shared.idempotency import IdempotencyDep
from shared.principal import PrincipalDep, StaffDep

router = APIRouter()

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=500, description="next_cursor of the previous page.")]
EnterpriseId = Annotated[uuid.UUID, Path(description="Enterprise id.")]
MilestoneCode = Annotated[
    str, Path(max_length=64, description="Milestone code, e.g. public_liability_insurance.")
]

JSON = "application/json"


async def expiry_warning(request: Request) -> timedelta:
    return request.app.state.settings.expiry_warning  # type: ignore[no-any-return]


WarningDep = Annotated[timedelta, Depends(expiry_warning)]


def _json(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type=JSON, headers=headers)


def _precondition(request: Request) -> service.Precondition:
    return lambda current: check_if_match(request, current)


# --- enterprises -----------------------------------------------------------------------------


@router.post(
    "/enterprises",
    status_code=201,
    response_model=Enterprise,
    tags=["enterprises"],
    summary="Register an enterprise (staff)",
)
async def create_enterprise(
    body: EnterpriseCreate,
    principal: StaffDep,
    session: SessionDep,
    idem: IdempotencyDep,
    warning: WarningDep,
) -> Response:
    replay = await idem.replay(session)
    if replay is not None:
        return replay
    enterprise = await service.create_enterprise(session, body, Actor.of(principal), warning=warning)
    response = _json(
        enterprise,
        201,
        {"Location": f"/api/v1/enterprises/{enterprise.id}", "ETag": etag(enterprise.version)},
    )
    return await idem.remember(session, response)


@router.get(
    "/enterprises", response_model=EnterprisePage, tags=["enterprises"], summary="List enterprises (staff)"
)
async def list_enterprises(
    principal: StaffDep,
    session: SessionDep,
    stage: StageName | None = None,
    cohort_id: uuid.UUID | None = None,
    legal_form: LegalForm | None = None,
    cpv: Annotated[
        str | None, Query(pattern=r"^\d{2,8}$", description="CPV code prefix, e.g. 45 or 4523.")
    ] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description="Text in the name.")] = None,
    size_class: Literal["micro", "small", "medium", "large"] | None = None,
    vcse: bool | None = None,
    ready: Annotated[bool | None, Query(description="Overall readiness as last announced.")] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> Response:
    filters = EnterpriseFilters(stage, cohort_id, legal_form, cpv, q, size_class, vcse, ready)
    items, next_cursor = await service.list_enterprises(session, filters, limit, cursor)
    # The rows are ours and already in the shape of Enterprise: serialize them directly.
    return Response(to_json({"items": items, "next_cursor": next_cursor}), media_type=JSON)


@router.get(
    "/enterprises/{enterprise_id}", response_model=Enterprise, tags=["enterprises"], summary="An enterprise"
)
async def get_enterprise(
    enterprise_id: EnterpriseId, principal: PrincipalDep, session: SessionDep
) -> Response:
    access.can_read_enterprise(principal, enterprise_id)
    enterprise = await service.get_enterprise(session, enterprise_id)
    return _json(enterprise, headers={"ETag": etag(enterprise.version)})


@router.patch(
    "/enterprises/{enterprise_id}",
    response_model=Enterprise,
    tags=["enterprises"],
    summary="Change an enterprise (staff: all fields and stage; the enterprise: its profile)",
    responses={412: {"description": "If-Match does not match the current ETag"}},
)
async def update_enterprise(
    enterprise_id: EnterpriseId,
    body: EnterpriseUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    warning: WarningDep,
) -> Response:
    changes = body.changes()
    access.can_update_enterprise(principal, enterprise_id, set(changes))
    enterprise = await service.update_enterprise(
        session, enterprise_id, changes, Actor.of(principal), _precondition(request), warning=warning
    )
    return _json(enterprise, headers={"ETag": etag(enterprise.version)})


@router.get(
    "/enterprises/{enterprise_id}/history",
    response_model=HistoryPage,
    tags=["enterprises"],
    summary="Every change of the enterprise and its milestones: who, when, what",
)
async def enterprise_history(
    enterprise_id: EnterpriseId,
    principal: PrincipalDep,
    session: SessionDep,
    milestone_code: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> Response:
    access.can_read_history(principal, enterprise_id)
    items, next_cursor = await service.list_history(
        session, enterprise_id, milestone_code=milestone_code, limit=limit, cursor=cursor
    )
    return _json(HistoryPage(items=items, next_cursor=next_cursor))


# --- cohorts ---------------------------------------------------------------------------------


@router.post(
    "/cohorts", status_code=201, response_model=Cohort, tags=["cohorts"], summary="Open a cohort (staff)"
)
async def create_cohort(
    body: CohortCreate, principal: StaffDep, session: SessionDep, idem: IdempotencyDep
) -> Response:
    replay = await idem.replay(session)
    if replay is not None:
        return replay
    cohort = await service.create_cohort(session, body)
    response = _json(cohort, 201, {"Location": f"/api/v1/cohorts/{cohort.id}", "ETag": etag(cohort.version)})
    return await idem.remember(session, response)


@router.get("/cohorts", response_model=CohortPage, tags=["cohorts"], summary="List cohorts (staff)")
async def list_cohorts(
    principal: StaffDep, session: SessionDep, limit: Limit = DEFAULT_PAGE_SIZE, cursor: Cursor = None
) -> Response:
    items, next_cursor = await service.list_cohorts(session, limit, cursor)
    return _json(CohortPage(items=items, next_cursor=next_cursor))


@router.get("/cohorts/{cohort_id}", response_model=Cohort, tags=["cohorts"], summary="A cohort (staff)")
async def get_cohort(cohort_id: uuid.UUID, principal: StaffDep, session: SessionDep) -> Response:
    cohort = await service.get_cohort(session, cohort_id)
    return _json(cohort, headers={"ETag": etag(cohort.version)})


# --- milestone catalogue ---------------------------------------------------------------------


@router.get(
    "/milestone-definitions",
    response_model=MilestoneDefinitionPage,
    tags=["milestones"],
    summary="The readiness milestone catalogue",
)
async def list_definitions(
    principal: PrincipalDep, session: SessionDep, limit: Limit = DEFAULT_PAGE_SIZE, cursor: Cursor = None
) -> Response:
    access.can_read_catalogue(principal)
    items, next_cursor = await service.list_definitions(session, limit, cursor)
    return _json(MilestoneDefinitionPage(items=items, next_cursor=next_cursor))


@router.post(
    "/milestone-definitions",
    status_code=201,
    response_model=MilestoneDefinition,
    tags=["milestones"],
    summary="Add a milestone definition to the catalogue (staff)",
)
async def create_definition(
    body: MilestoneDefinitionCreate, principal: StaffDep, session: SessionDep, idem: IdempotencyDep
) -> Response:
    replay = await idem.replay(session)
    if replay is not None:
        return replay
    definition = await service.create_definition(session, body, Actor.of(principal))
    response = _json(
        definition,
        201,
        {"Location": f"/api/v1/milestone-definitions/{definition.code}", "ETag": etag(definition.version)},
    )
    return await idem.remember(session, response)


@router.get(
    "/milestone-definitions/{code}",
    response_model=MilestoneDefinition,
    tags=["milestones"],
    summary="One milestone definition",
)
async def get_definition(code: MilestoneCode, principal: PrincipalDep, session: SessionDep) -> Response:
    access.can_read_catalogue(principal)
    definition = service.definition_out(await service.get_definition(session, code))
    return _json(definition, headers={"ETag": etag(definition.version)})


@router.patch(
    "/milestone-definitions/{code}",
    response_model=MilestoneDefinition,
    tags=["milestones"],
    summary="Change a milestone definition (staff); readiness is recomputed where it matters",
    responses={412: {"description": "If-Match does not match the current ETag"}},
)
async def update_definition(
    code: MilestoneCode,
    body: MilestoneDefinitionUpdate,
    request: Request,
    principal: StaffDep,
    session: SessionDep,
) -> Response:
    definition = await service.update_definition(
        session, code, body.changes(), Actor.of(principal), _precondition(request)
    )
    return _json(definition, headers={"ETag": etag(definition.version)})


# --- enterprise milestones -------------------------------------------------------------------


@router.get(
    "/enterprises/{enterprise_id}/milestones",
    response_model=EnterpriseMilestonePage,
    tags=["milestones"],
    summary="An enterprise's milestones: every catalogue entry with its status",
)
async def list_milestones(
    enterprise_id: EnterpriseId, principal: PrincipalDep, session: SessionDep
) -> Response:
    access.can_read_enterprise(principal, enterprise_id)
    items = await service.list_milestones(session, enterprise_id)
    return _json(EnterpriseMilestonePage(items=items, next_cursor=None))


@router.get(
    "/enterprises/{enterprise_id}/milestones/{code}",
    response_model=EnterpriseMilestone,
    tags=["milestones"],
    summary="One enterprise milestone (its ETag is what PATCH If-Match compares)",
)
async def get_milestone(
    enterprise_id: EnterpriseId, code: MilestoneCode, principal: PrincipalDep, session: SessionDep
) -> Response:
    access.can_read_enterprise(principal, enterprise_id)
    item = await service.get_milestone(session, enterprise_id, code)
    return _json(item, headers={"ETag": etag(item.version)})


@router.patch(
    "/enterprises/{enterprise_id}/milestones/{code}",
    response_model=EnterpriseMilestone,
    tags=["milestones"],
    summary="Work on, submit, verify or reject an enterprise milestone",
    responses={412: {"description": "If-Match does not match the current ETag"}},
)
async def change_milestone(
    enterprise_id: EnterpriseId,
    code: MilestoneCode,
    body: MilestoneUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    warning: WarningDep,
) -> Response:
    access.can_change_milestone(principal, enterprise_id, body.status)
    item = await service.change_milestone(
        session, enterprise_id, code, body, Actor.of(principal), _precondition(request), warning=warning
    )
    return _json(item, headers={"ETag": etag(item.version)})


@router.get(
    "/enterprises/{enterprise_id}/readiness",
    response_model=ReadinessOut,
    tags=["milestones"],
    summary="Readiness overall, or for one public demand line (?demand_id=)",
)
async def get_readiness(
    enterprise_id: EnterpriseId,
    principal: PrincipalDep,
    session: SessionDep,
    warning: WarningDep,
    demand_id: uuid.UUID | None = None,
) -> Response:
    access.can_read_enterprise(principal, enterprise_id)
    result = await service.assess_enterprise(
        session, enterprise_id, demand_id=demand_id, now=utcnow(), warning=warning
    )
    return _json(result)
