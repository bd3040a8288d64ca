"""HTTP routes of the enterprises service: validation and authorization only, no SQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel

from services.enterprises import access
from services.enterprises.actors import Actor
from services.enterprises.repository import BidFilters, EnterpriseFilters
from services.enterprises.schemas import (
    Bid,
    BidCreate,
    BidCreated,
    BidHistoryPage,
    BidPage,
    BidQuery,
    BidUpdate,
    Cohort,
    CohortCreate,
    CohortPage,
    Enterprise,
    EnterpriseBidQuery,
    EnterpriseCreate,
    EnterpriseMilestone,
    EnterpriseMilestonePage,
    EnterprisePage,
    EnterpriseQuery,
    EnterpriseUpdate,
    HistoryPage,
    HistoryQuery,
    ImpactQuery,
    ImpactReport,
    MilestoneDefinition,
    MilestoneDefinitionCreate,
    MilestoneDefinitionPage,
    MilestoneDefinitionUpdate,
    MilestoneUpdate,
    PageQuery,
    ReadinessOut,
)
from services.enterprises.service import (
    Precondition,
    assessment,
    bids,
    catalogue,
    cohorts,
    enterprises,
    impact,
    milestones,
)
from services.enterprises.service.history import list_history
from shared.db import SessionDep, utcnow
from shared.http import check_if_match, etag
from shared.idempotency import IdempotencyDep
from shared.principal import PrincipalDep, StaffDep

router = APIRouter()

Page = Annotated[PageQuery, Query()]
EnterpriseId = Annotated[uuid.UUID, Path(description="Enterprise id.")]
BidId = Annotated[uuid.UUID, Path(description="Bid id.")]
MilestoneCode = Annotated[
    str, Path(max_length=64, description="Milestone code, e.g. public_liability_insurance.")
]

JSON = "application/json"


async def expiry_warning(request: Request) -> timedelta:
    return request.app.state.settings.expiry_warning  # type: ignore[no-any-return]


WarningDep = Annotated[timedelta, Depends(expiry_warning)]


def _json(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type=JSON, headers=headers)


def _precondition(request: Request) -> Precondition:
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
    async def create() -> Response:
        enterprise = await enterprises.create_enterprise(session, body, Actor.of(principal), warning=warning)
        return _json(
            enterprise,
            201,
            {"Location": f"/api/v1/enterprises/{enterprise.id}", "ETag": etag(enterprise.version)},
        )

    return await idem.respond(session, create)


@router.get(
    "/enterprises", response_model=EnterprisePage, tags=["enterprises"], summary="List enterprises (staff)"
)
async def list_enterprises(
    principal: StaffDep, session: SessionDep, query: Annotated[EnterpriseQuery, Query()]
) -> Response:
    filters = EnterpriseFilters(**query.model_dump(exclude={"limit", "cursor"}))
    items, next_cursor = await enterprises.list_enterprises(session, filters, query.limit, query.cursor)
    return _json(EnterprisePage(items=items, next_cursor=next_cursor))


@router.get(
    "/enterprises/{enterprise_id}", response_model=Enterprise, tags=["enterprises"], summary="An enterprise"
)
async def get_enterprise(
    enterprise_id: EnterpriseId, principal: PrincipalDep, session: SessionDep
) -> Response:
    access.can_read_enterprise(principal, enterprise_id)
    enterprise = await enterprises.get_enterprise(session, enterprise_id)
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
    enterprise = await enterprises.update_enterprise(
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
    query: Annotated[HistoryQuery, Query()],
) -> Response:
    access.can_read_history(principal, enterprise_id)
    items, next_cursor = await list_history(
        session, enterprise_id, milestone_code=query.milestone_code, limit=query.limit, cursor=query.cursor
    )
    return _json(HistoryPage(items=items, next_cursor=next_cursor))


# --- cohorts ---------------------------------------------------------------------------------


@router.post(
    "/cohorts", status_code=201, response_model=Cohort, tags=["cohorts"], summary="Open a cohort (staff)"
)
async def create_cohort(
    body: CohortCreate, principal: StaffDep, session: SessionDep, idem: IdempotencyDep
) -> Response:
    async def create() -> Response:
        cohort = await cohorts.create_cohort(session, body)
        return _json(cohort, 201, {"Location": f"/api/v1/cohorts/{cohort.id}", "ETag": etag(cohort.version)})

    return await idem.respond(session, create)


@router.get("/cohorts", response_model=CohortPage, tags=["cohorts"], summary="List cohorts (staff)")
async def list_cohorts(principal: StaffDep, session: SessionDep, page: Page) -> Response:
    items, next_cursor = await cohorts.list_cohorts(session, page.limit, page.cursor)
    return _json(CohortPage(items=items, next_cursor=next_cursor))


@router.get("/cohorts/{cohort_id}", response_model=Cohort, tags=["cohorts"], summary="A cohort (staff)")
async def get_cohort(cohort_id: uuid.UUID, principal: StaffDep, session: SessionDep) -> Response:
    cohort = await cohorts.get_cohort(session, cohort_id)
    return _json(cohort, headers={"ETag": etag(cohort.version)})


# --- milestone catalogue ---------------------------------------------------------------------


@router.get(
    "/milestone-definitions",
    response_model=MilestoneDefinitionPage,
    tags=["milestones"],
    summary="The readiness milestone catalogue",
)
async def list_definitions(principal: PrincipalDep, session: SessionDep, page: Page) -> Response:
    access.can_read_catalogue(principal)
    items, next_cursor = await catalogue.list_definitions(session, page.limit, page.cursor)
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
    async def create() -> Response:
        definition = await catalogue.create_definition(session, body, Actor.of(principal))
        return _json(
            definition,
            201,
            {
                "Location": f"/api/v1/milestone-definitions/{definition.code}",
                "ETag": etag(definition.version),
            },
        )

    return await idem.respond(session, create)


@router.get(
    "/milestone-definitions/{code}",
    response_model=MilestoneDefinition,
    tags=["milestones"],
    summary="One milestone definition",
)
async def get_definition(code: MilestoneCode, principal: PrincipalDep, session: SessionDep) -> Response:
    access.can_read_catalogue(principal)
    definition = await catalogue.get_definition(session, code)
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
    definition = await catalogue.update_definition(
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
    items = await milestones.list_milestones(session, enterprise_id)
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
    item = await milestones.get_milestone(session, enterprise_id, code)
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
    item = await milestones.change_milestone(
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
    result = await assessment.assess_enterprise(
        session, enterprise_id, demand_id=demand_id, now=utcnow(), warning=warning
    )
    return _json(result)


# --- bids ------------------------------------------------------------------------------------


@router.post(
    "/enterprises/{enterprise_id}/bids",
    status_code=201,
    response_model=BidCreated,
    tags=["bids"],
    summary="Record a bid of the enterprise on a public demand line, with its readiness gaps",
)
async def create_bid(
    enterprise_id: EnterpriseId,
    body: BidCreate,
    principal: PrincipalDep,
    session: SessionDep,
    idem: IdempotencyDep,
    warning: WarningDep,
) -> Response:
    access.can_manage_bids_of(principal, enterprise_id)

    async def create() -> Response:
        bid = await bids.create_bid(session, enterprise_id, body, Actor.of(principal), warning=warning)
        return _json(bid, 201, {"Location": f"/api/v1/bids/{bid.id}", "ETag": etag(bid.version)})

    return await idem.respond(session, create)


@router.get(
    "/enterprises/{enterprise_id}/bids",
    response_model=BidPage,
    tags=["bids"],
    summary="An enterprise's bids, in the order they were made",
)
async def list_enterprise_bids(
    enterprise_id: EnterpriseId,
    principal: PrincipalDep,
    session: SessionDep,
    query: Annotated[EnterpriseBidQuery, Query()],
) -> Response:
    access.can_manage_bids_of(principal, enterprise_id)
    items, next_cursor = await bids.list_enterprise_bids(
        session, enterprise_id, query.status, query.limit, query.cursor
    )
    return _json(BidPage(items=items, next_cursor=next_cursor))


@router.get(
    "/bids",
    response_model=BidPage,
    tags=["bids"],
    summary="Bids: staff all, an enterprise its own, an anchor those on its lines that were awarded",
)
async def list_bids(
    principal: PrincipalDep, session: SessionDep, query: Annotated[BidQuery, Query()]
) -> Response:
    own_enterprise_id, anchor_id = access.bid_list_scope(principal)
    filters = BidFilters(
        status=query.status,
        demand_id=query.demand_id,
        enterprise_id=query.enterprise_id,
        visible_to_enterprise=own_enterprise_id,
        anchor_id=anchor_id,
    )
    items, next_cursor = await bids.list_bids(session, filters, query.limit, query.cursor)
    return _json(BidPage(items=items, next_cursor=next_cursor))


@router.get("/bids/{bid_id}", response_model=Bid, tags=["bids"], summary="A bid")
async def get_bid(bid_id: BidId, principal: PrincipalDep, session: SessionDep) -> Response:
    access.can_use_bids(principal)
    bid = await bids.get_bid(session, bid_id, principal)
    return _json(bid, headers={"ETag": etag(bid.version)})


@router.patch(
    "/bids/{bid_id}",
    response_model=Bid,
    tags=["bids"],
    summary="Move a bid on (submitted, won, lost, withdrawn) or change its role, partners or value",
    responses={412: {"description": "If-Match does not match the current ETag"}},
)
async def update_bid(
    bid_id: BidId, body: BidUpdate, request: Request, principal: PrincipalDep, session: SessionDep
) -> Response:
    access.can_use_bids(principal)
    bid = await bids.update_bid(session, bid_id, body.changes(), principal, _precondition(request))
    return _json(bid, headers={"ETag": etag(bid.version)})


@router.get(
    "/bids/{bid_id}/history",
    response_model=BidHistoryPage,
    tags=["bids"],
    summary="Every version of a bid: who, when, what it then was",
)
async def bid_history(bid_id: BidId, principal: PrincipalDep, session: SessionDep, page: Page) -> Response:
    access.can_use_bids(principal)
    items, next_cursor = await bids.list_bid_history(session, bid_id, principal, page.limit, page.cursor)
    return _json(BidHistoryPage(items=items, next_cursor=next_cursor))


# --- the impact report ------------------------------------------------------------------------

ImpactScope = Annotated[ImpactQuery, Query()]


async def _impact_report(query: ImpactQuery, principal: PrincipalDep, session: SessionDep) -> ImpactReport:
    narrowed_by = [name for name in access.IMPACT_NARROWING if getattr(query, name) is not None]
    access.can_read_impact(principal, query.shareable, narrowed_by)
    return await impact.impact_report(session, query)


@router.get(
    "/reports/impact",
    response_model=ImpactReport,
    tags=["reports"],
    summary="What incubated enterprises bid for and won (staff; shareable for anchors and integrators)",
)
async def impact_report(query: ImpactScope, principal: PrincipalDep, session: SessionDep) -> Response:
    return _json(await _impact_report(query, principal, session))


@router.get(
    "/reports/impact.csv",
    tags=["reports"],
    summary="The impact report as CSV: the totals and each group, one column per figure",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def impact_report_csv(query: ImpactScope, principal: PrincipalDep, session: SessionDep) -> Response:
    return Response(
        impact.impact_csv(await _impact_report(query, principal, session)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="impact.csv"'},
    )
