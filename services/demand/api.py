"""HTTP routes of the demand service: validation and authorization only, no SQL."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from services.demand import imports, pipeline, service
from services.demand.schemas import (
    ANCHOR_TYPES,
    STATUSES,
    AnchorCreate,
    AnchorOut,
    AnchorPatch,
    CandidateList,
    DemandCreate,
    DemandOut,
    DemandPatch,
    DemandVersionOut,
    ImportResult,
    MatchList,
    PipelineView,
)
from services.demand.settings import DemandSettings
from shared.db import SessionDep
from shared.http import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Page,
    check_if_match,
    etag,
    json_response,
    matches_etag,
)
from shared.idempotency import IdempotencyDep
from shared.principal import Principal, StaffDep, require_roles
from shared.problems import Problem, field_errors, forbidden, not_found

router = APIRouter()

SignedInDep = Annotated[Principal, require_roles("staff", "anchor", "enterprise", "mentor", "integrator")]
BuyerDep = Annotated[Principal, require_roles("staff", "anchor")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
ListParam = Annotated[list[str] | None, Query()]


async def _settings(request: Request) -> DemandSettings:
    settings = request.app.state.settings
    assert isinstance(settings, DemandSettings)
    return settings


SettingsDep = Annotated[DemandSettings, Depends(_settings)]


# --- anchors -------------------------------------------------------------------------------------


@router.post(
    "/anchors", status_code=201, response_model=AnchorOut, tags=["anchors"], summary="Register an anchor"
)
async def create_anchor(
    body: AnchorCreate, session: SessionDep, principal: StaffDep, idempotency: IdempotencyDep
) -> Response:
    replay = await idempotency.replay(session)
    if replay is not None:
        return replay
    anchor = await service.create_anchor(session, body)
    response = json_response(
        AnchorOut.model_validate(anchor),
        201,
        {"Location": f"/api/v1/anchors/{anchor['id']}", "ETag": etag(anchor["version"])},
    )
    return await idempotency.remember(session, response)


@router.get("/anchors", response_model=Page[AnchorOut], tags=["anchors"], summary="List anchors")
async def list_anchors(
    session: SessionDep,
    principal: SignedInDep,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
    type: Annotated[str | None, Query(description="an anchor type")] = None,
    q: Annotated[str | None, Query(max_length=100, description="part of the name")] = None,
) -> Page[AnchorOut]:
    if type is not None and type not in ANCHOR_TYPES:
        raise field_errors([{"field": "type", "message": f"{type!r} is not an anchor type"}])
    items, next_cursor = await service.list_anchors(
        session, cursor=cursor, limit=limit, anchor_type=type, q=q
    )
    return Page[AnchorOut](items=[AnchorOut.model_validate(a) for a in items], next_cursor=next_cursor)


@router.get("/anchors/{anchor_id}", response_model=AnchorOut, tags=["anchors"], summary="One anchor")
async def get_anchor(anchor_id: str, session: SessionDep, principal: SignedInDep) -> Response:
    anchor = await service.get_anchor(session, anchor_id)
    if anchor is None:
        raise not_found("Anchor", anchor_id)
    return json_response(AnchorOut.model_validate(anchor), headers={"ETag": etag(anchor["version"])})


@router.patch("/anchors/{anchor_id}", response_model=AnchorOut, tags=["anchors"], summary="Change an anchor")
async def update_anchor(
    anchor_id: str, body: AnchorPatch, request: Request, session: SessionDep, principal: StaffDep
) -> Response:
    anchor = await service.get_anchor(session, anchor_id)
    if anchor is None:
        raise not_found("Anchor", anchor_id)
    check_if_match(request, etag(anchor["version"]))
    anchor = await service.update_anchor(session, anchor, body)
    return json_response(AnchorOut.model_validate(anchor), headers={"ETag": etag(anchor["version"])})


# --- demand lines --------------------------------------------------------------------------------


@router.post(
    "/demand", status_code=201, response_model=DemandOut, tags=["demand"], summary="Post a demand line"
)
async def create_line(
    body: DemandCreate, session: SessionDep, principal: BuyerDep, idempotency: IdempotencyDep
) -> Response:
    replay = await idempotency.replay(session)
    if replay is not None:
        return replay
    line = await service.create_line(session, principal, body)
    response = json_response(
        DemandOut.model_validate(line),
        201,
        {"Location": f"/api/v1/demand/{line['id']}", "ETag": etag(line["version"])},
    )
    return await idempotency.remember(session, response)


def _dates(start: date | None, end: date | None) -> None:
    if start and end and start > end:
        raise field_errors([{"field": "from", "message": "must not be after to"}])


def _cpv_prefixes(values: list[str] | None) -> tuple[str, ...]:
    prefixes = [p.strip() for v in values or [] for p in v.split(",") if p.strip()]
    bad = [p for p in prefixes if not (p.isdigit() and 2 <= len(p) <= 8)]
    if bad:
        raise field_errors([{"field": "cpv", "message": f"{p!r} is not a CPV code or prefix"} for p in bad])
    return tuple(prefixes)


@router.get("/demand", response_model=Page[DemandOut], tags=["demand"], summary="List demand lines")
async def list_lines(
    session: SessionDep,
    principal: SignedInDep,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
    cpv: Annotated[
        list[str] | None, Query(description="CPV codes or prefixes (division: 2 digits...)")
    ] = None,
    anchor_id: str | None = None,
    status: ListParam = None,
    visibility: Literal["public", "aggregate_only"] | None = None,
    category: Literal["goods", "services", "works"] | None = None,
    from_: Annotated[date | None, Query(alias="from", description="expected tender date from")] = None,
    to: Annotated[date | None, Query(description="expected tender date up to")] = None,
    suitable_for_sme: bool | None = None,
    suitable_for_vcse: bool | None = None,
) -> Page[DemandOut]:
    statuses = tuple(s.strip() for v in status or [] for s in v.split(",") if s.strip())
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise field_errors([{"field": "status", "message": f"{s!r} is not a status"} for s in bad])
    _dates(from_, to)
    filters = service.LineFilters(
        anchor_id=anchor_id,
        statuses=statuses,
        visibility=visibility,
        category=category,
        cpv_prefixes=_cpv_prefixes(cpv),
        tender_from=from_,
        tender_to=to,
        suitable_for_sme=suitable_for_sme,
        suitable_for_vcse=suitable_for_vcse,
    )
    items, next_cursor = await service.list_lines(session, principal, filters, cursor=cursor, limit=limit)
    return Page[DemandOut](items=[DemandOut.model_validate(i) for i in items], next_cursor=next_cursor)


@router.get(
    "/demand/imports/template.csv",
    tags=["imports"],
    summary="The CSV import template",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def import_template(
    principal: SignedInDep,
    example: Annotated[bool, Query(description="add an example row")] = False,
) -> Response:
    return Response(
        imports.template_csv(example),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="demand-import-template.csv"'},
    )


@router.post(
    "/demand/imports",
    response_model=ImportResult,
    responses={415: {"description": "The Content-Type is none of the three the import reads."}},
    tags=["imports"],
    summary="Import demand lines (CSV, JSON lines or an OCDS release package)",
    description=(
        "The file is the request body, read as a stream; its kind by Content-Type: text/csv, "
        "application/x-ndjson, or application/json (an OCDS release package of planning releases). "
        "Lines are upserted by external_ref, so importing a file again changes nothing. All or nothing: "
        "422 lists every bad row (row, field, message) and nothing is written. Staff name the anchor "
        "with ?anchor_id=."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def import_lines(
    request: Request,
    session: SessionDep,
    principal: BuyerDep,
    settings: SettingsDep,
    anchor_id: str | None = None,
) -> ImportResult:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    kind = imports.MEDIA_TYPES.get(media_type)
    if kind is None:
        raise Problem(
            415,
            "Unsupported Media Type",
            "Send text/csv, application/x-ndjson or application/json (an OCDS release package).",
            type="unsupported-media-type",
        )
    reader = {"csv": imports.csv_rows, "ndjson": imports.ndjson_rows, "ocds": imports.ocds_rows}[kind]
    try:
        counts = await service.import_lines(session, principal, anchor_id, reader(request.stream()), settings)
    except service.ImportRejected as exc:
        raise Problem(
            422,
            "Import rejected",
            f"{exc.total} problem(s) in the file; nothing was imported.",
            type="import-rejected",
            errors=exc.errors,
            errors_total=exc.total,
            rows_read=exc.rows,
        ) from None
    return ImportResult(
        format=kind,
        rows=counts.rows,
        created=counts.created,
        updated=counts.updated,
        unchanged=counts.unchanged,
    )


@router.get(
    "/demand/ocds",
    tags=["demand"],
    summary="The public open demand as an OCDS 1.1 release package",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}}}},
)
async def ocds_export(
    request: Request,
    principal: SignedInDep,
    settings: SettingsDep,
    cpv: ListParam = None,
    anchor_id: str | None = None,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: date | None = None,
) -> StreamingResponse:
    _dates(from_, to)
    filters = service.LineFilters(
        anchor_id=anchor_id, cpv_prefixes=_cpv_prefixes(cpv), tender_from=from_, tender_to=to
    )
    return StreamingResponse(
        service.ocds_package(request.app.state.database, filters, settings), media_type="application/json"
    )


@router.get("/demand/{demand_id}", response_model=DemandOut, tags=["demand"], summary="One demand line")
async def get_line(demand_id: str, request: Request, session: SessionDep, principal: SignedInDep) -> Response:
    line = service.require_visible(principal, await service.get_line(session, demand_id), demand_id)
    tag = etag(line["version"])
    if matches_etag(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers={"ETag": tag})
    return json_response(DemandOut.model_validate(line), headers={"ETag": tag})


@router.patch(
    "/demand/{demand_id}",
    response_model=DemandOut,
    tags=["demand"],
    summary="Change a demand line (JSON merge patch; If-Match with its ETag)",
)
async def update_line(
    demand_id: str, body: DemandPatch, request: Request, session: SessionDep, principal: SignedInDep
) -> Response:
    line = await service.get_line(session, demand_id, for_update=True)
    line = service.require_editor(principal, line, demand_id)
    check_if_match(request, etag(line["version"]))
    line = await service.update_line(
        session, principal, line, body.model_dump(mode="json", exclude_unset=True)
    )
    return json_response(DemandOut.model_validate(line), headers={"ETag": etag(line["version"])})


@router.get(
    "/demand/{demand_id}/history",
    response_model=Page[DemandVersionOut],
    tags=["demand"],
    summary="Every version of a demand line, newest first",
)
async def line_history(
    demand_id: str,
    session: SessionDep,
    principal: SignedInDep,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> Page[DemandVersionOut]:
    line = service.require_editor(principal, await service.get_line(session, demand_id), demand_id)
    items, next_cursor = await service.line_history(session, line, cursor=cursor, limit=limit)
    return Page[DemandVersionOut](
        items=[
            DemandVersionOut(
                version=i["version"],
                change=i["change"],
                changed_at=i["changed_at"],
                actor=i["actor"],
                actor_role=i["actor_role"],
                changed_fields=i["changed_fields"],
                line=DemandOut.model_validate(i["data"]),
            )
            for i in items
        ],
        next_cursor=next_cursor,
    )


@router.get(
    "/demand/{demand_id}/candidates",
    response_model=CandidateList,
    tags=["matching"],
    summary="Incubated enterprises that could bid for this line (its anchor and staff)",
)
async def line_candidates(
    demand_id: str,
    session: SessionDep,
    principal: SignedInDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> CandidateList:
    line = service.require_editor(principal, await service.get_line(session, demand_id), demand_id)
    size = min(limit or settings.match_default_limit, settings.match_max_limit)
    return CandidateList.model_validate({"items": await service.line_candidates(session, line, size)})


# --- pipeline and matches ------------------------------------------------------------------------


@router.get(
    "/pipeline",
    tags=["pipeline"],
    summary="The aggregated pipeline, disclosure control applied",
    description=(
        "Group by any of cpv_division, cpv_group, quarter, anchor_type, value_band, suitable_for_vcse, "
        "suitable_for_sme, delivery_area (comma-separated). quarter is of the expected tender date, or of "
        "the contract start with quarter_of=contract_start; from and to are quarters (2027-Q1; a date "
        "selects its quarter). Figures come from the latest snapshot; a cell with aggregate-only lines "
        "that cannot be shown safely has suppressed: true and null figures. ETag / If-None-Match."
    ),
    responses={200: {"model": PipelineView}, 304: {"description": "Not modified"}},
)
async def get_pipeline(
    request: Request,
    session: SessionDep,
    principal: SignedInDep,
    settings: SettingsDep,
    group_by: ListParam = None,
    quarter_of: str | None = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    cpv: ListParam = None,
    anchor_type: ListParam = None,
    value_band: ListParam = None,
    delivery_area: ListParam = None,
    suitable_for_vcse: bool | None = None,
    suitable_for_sme: bool | None = None,
) -> Response:
    params = pipeline.ViewParams.parse(
        group_by=group_by,
        quarter_of=quarter_of,
        from_=from_,
        to=to,
        cpv_prefixes=cpv,
        anchor_types=anchor_type,
        value_bands=value_band,
        delivery_areas=delivery_area,
        suitable_for_vcse=suitable_for_vcse,
        suitable_for_sme=suitable_for_sme,
    )
    tag, body = await service.pipeline_answer(
        session, params, settings, request.app.state.pipeline_views, request.headers.get("if-none-match")
    )
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if body is None:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get(
    "/enterprises/{enterprise_id}/matches",
    response_model=MatchList,
    tags=["matching"],
    summary="Public open demand lines this enterprise could bid for, best first",
)
async def enterprise_matches(
    enterprise_id: str,
    session: SessionDep,
    principal: SignedInDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> MatchList:
    if principal.role == "integrator":
        raise forbidden("Integrators cannot read an enterprise's matches.")
    if principal.role == "anchor" or (
        principal.role == "enterprise" and not principal.owns("enterprise", enterprise_id)
    ):
        raise not_found("Enterprise", enterprise_id)
    size = min(limit or settings.match_default_limit, settings.match_max_limit)
    return MatchList.model_validate({"items": await service.enterprise_matches(session, enterprise_id, size)})
