"""HTTP routes of the demand service: validation and authorization only, no SQL."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from services.demand import access, imports
from services.demand.schemas import (
    AnchorCreate,
    AnchorOut,
    AnchorPatch,
    AnchorQuery,
    AwardIn,
    AwardOut,
    CandidateList,
    DemandCreate,
    DemandDetailOut,
    DemandOut,
    DemandPatch,
    DemandVersionOut,
    ImportResult,
    LineQuery,
    MatchList,
    MatchQuery,
    OcdsQuery,
    PageQuery,
    PipelineQuery,
    PipelineView,
)
from services.demand.service import anchors, awards, export, lines
from services.demand.service import imports as import_service
from services.demand.service import matching as match_service
from services.demand.service import pipeline as pipeline_service
from services.demand.settings import DemandSettings
from shared.db import SessionDep
from shared.http import Page, check_if_match, etag, json_response, matches_etag
from shared.idempotency import IdempotencyDep
from shared.principal import Principal, StaffDep, require_roles
from shared.problems import Problem

router = APIRouter()

SignedInDep = Annotated[Principal, require_roles("staff", "anchor", "enterprise", "mentor", "integrator")]
BuyerDep = Annotated[Principal, require_roles("staff", "anchor")]


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
    async def create() -> Response:
        anchor = await anchors.create_anchor(session, body)
        return json_response(
            AnchorOut.model_validate(anchor),
            201,
            {"Location": f"/api/v1/anchors/{anchor.id}", "ETag": etag(anchor.version)},
        )

    return await idempotency.respond(session, create)


@router.get("/anchors", response_model=Page[AnchorOut], tags=["anchors"], summary="List anchors")
async def list_anchors(
    session: SessionDep, principal: SignedInDep, query: Annotated[AnchorQuery, Query()]
) -> Page[AnchorOut]:
    items, next_cursor = await anchors.list_anchors(
        session, cursor=query.cursor, limit=query.limit, anchor_type=query.type, q=query.q
    )
    return Page[AnchorOut](items=[AnchorOut.model_validate(a) for a in items], next_cursor=next_cursor)


@router.get("/anchors/{anchor_id}", response_model=AnchorOut, tags=["anchors"], summary="One anchor")
async def get_anchor(anchor_id: str, session: SessionDep, principal: SignedInDep) -> Response:
    anchor = await anchors.get_anchor(session, anchor_id)
    return json_response(AnchorOut.model_validate(anchor), headers={"ETag": etag(anchor.version)})


@router.patch("/anchors/{anchor_id}", response_model=AnchorOut, tags=["anchors"], summary="Change an anchor")
async def update_anchor(
    anchor_id: str, body: AnchorPatch, request: Request, session: SessionDep, principal: StaffDep
) -> Response:
    anchor = await anchors.get_anchor(session, anchor_id)
    check_if_match(request, etag(anchor.version))
    anchor = await anchors.update_anchor(session, anchor, body)
    return json_response(AnchorOut.model_validate(anchor), headers={"ETag": etag(anchor.version)})


# --- demand lines --------------------------------------------------------------------------------


@router.post(
    "/demand", status_code=201, response_model=DemandOut, tags=["demand"], summary="Post a demand line"
)
async def create_line(
    body: DemandCreate, session: SessionDep, principal: BuyerDep, idempotency: IdempotencyDep
) -> Response:
    async def create() -> Response:
        line = await lines.create_line(session, principal, body)
        return json_response(
            DemandOut.model_validate(line),
            201,
            {"Location": f"/api/v1/demand/{line['id']}", "ETag": etag(line["version"])},
        )

    return await idempotency.respond(session, create)


@router.get("/demand", response_model=Page[DemandOut], tags=["demand"], summary="List demand lines")
async def list_lines(
    session: SessionDep, principal: SignedInDep, query: Annotated[LineQuery, Query()]
) -> Page[DemandOut]:
    items, next_cursor = await lines.list_lines(
        session, principal, query.filters(), cursor=query.cursor, limit=query.limit
    )
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
        counts = await import_service.import_lines(
            session, principal, anchor_id, reader(request.stream()), settings
        )
    except import_service.ImportRejected as exc:
        raise Problem(
            422,
            "Import rejected",
            f"{exc.total} problem(s) in the file; nothing was imported.",
            type="import-rejected",
            errors=exc.errors,
            errors_total=exc.total,
            rows_read=exc.rows,
        ) from None
    return ImportResult.model_validate({**vars(counts), "format": kind})


@router.get(
    "/demand/ocds",
    tags=["demand"],
    summary="The public open demand, and awarded lines with their award, as an OCDS 1.1 release package",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}}}},
)
async def ocds_export(
    request: Request, principal: SignedInDep, settings: SettingsDep, query: Annotated[OcdsQuery, Query()]
) -> StreamingResponse:
    return StreamingResponse(
        export.ocds_package(request.app.state.database, query.filters(), settings),
        media_type="application/json",
    )


@router.get(
    "/demand/ocds/extension/{name}",
    tags=["demand"],
    summary="The Seedbed OCDS extension the export declares: extension.json or release-schema.json",
    responses={200: {"content": {"application/json": {}}}, 404: {"description": "No such file."}},
)
async def ocds_extension_file(name: str, principal: SignedInDep) -> Response:
    content = export.ocds_extension_file(name)
    return Response(content, media_type="application/json", headers={"Cache-Control": "public, max-age=3600"})


def line_etag(line: dict[str, Any]) -> str:
    """A line's ETag: its version, and whether it is stale (marking it stale makes no new version,
    but changes what GET answers)."""
    return etag(f"{line['version']}-stale" if line.get("stale_since") else line["version"])


@router.get("/demand/{demand_id}", response_model=DemandDetailOut, tags=["demand"], summary="One demand line")
async def get_line(demand_id: str, request: Request, session: SessionDep, principal: SignedInDep) -> Response:
    line = await lines.get_visible_line(session, principal, demand_id)
    tag = line_etag(line)
    if matches_etag(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers={"ETag": tag})
    award = await awards.award_of(session, line)
    return json_response(DemandDetailOut.model_validate({**line, "award": award}), headers={"ETag": tag})


@router.patch(
    "/demand/{demand_id}",
    response_model=DemandOut,
    tags=["demand"],
    summary="Change a demand line (JSON merge patch; If-Match with its ETag)",
)
async def update_line(
    demand_id: str, body: DemandPatch, request: Request, session: SessionDep, principal: SignedInDep
) -> Response:
    line = await lines.get_editable_line(session, principal, demand_id, for_update=True)
    check_if_match(request, line_etag(line))
    line = await lines.update_line(session, principal, line, body.model_dump(mode="json", exclude_unset=True))
    return json_response(DemandOut.model_validate(line), headers={"ETag": line_etag(line)})


NO_AWARD_ETAG = etag(0)  # what If-Match names to set an award only if there is none yet


@router.get(
    "/demand/{demand_id}/award",
    response_model=AwardOut,
    responses={404: {"description": "No such line visible to the caller, or the line has no award."}},
    tags=["demand"],
    summary="Who won a demand line and for how much",
)
async def get_award(demand_id: str, session: SessionDep, principal: SignedInDep) -> Response:
    line = await lines.get_visible_line(session, principal, demand_id)
    award = await awards.require_award(session, line)
    return json_response(AwardOut.model_validate(award), headers={"ETag": etag(award["version"])})


@router.put(
    "/demand/{demand_id}/award",
    response_model=AwardOut,
    responses={
        201: {"model": AwardOut, "description": "The line's first award."},
        409: {"description": "The line is a draft, cancelled or withdrawn (`errors` names `status`)."},
        412: {"description": 'If-Match names another version of the award ("0": none yet).'},
    },
    tags=["demand"],
    summary="Set or correct the award of a demand line (the line becomes awarded)",
    description=(
        "The line's anchor or staff. 201 the first time, 200 for a correction or an unchanged award "
        "(which changes and publishes nothing). Optional If-Match with the award's ETag "
        '(its version; "0" sets it only if the line has none yet).'
    ),
)
async def put_award(
    demand_id: str, body: AwardIn, request: Request, session: SessionDep, principal: SignedInDep
) -> Response:
    line = await lines.get_editable_line(session, principal, demand_id, for_update=True)
    current = await awards.award_of(session, line)
    check_if_match(request, etag(current["version"]) if current else NO_AWARD_ETAG)
    award, created = await awards.set_award(session, principal, line, current, body)
    headers = {"ETag": etag(award["version"])}
    if created:
        headers["Location"] = f"/api/v1/demand/{demand_id}/award"
    return json_response(AwardOut.model_validate(award), 201 if created else 200, headers)


@router.get(
    "/demand/{demand_id}/history",
    response_model=Page[DemandVersionOut],
    tags=["demand"],
    summary="Every version of a demand line, newest first",
)
async def line_history(
    demand_id: str, session: SessionDep, principal: SignedInDep, query: Annotated[PageQuery, Query()]
) -> Page[DemandVersionOut]:
    line = await lines.get_editable_line(session, principal, demand_id)
    items, next_cursor = await lines.line_history(session, line, cursor=query.cursor, limit=query.limit)
    return Page[DemandVersionOut](
        items=[DemandVersionOut.model_validate(i) for i in items], next_cursor=next_cursor
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
    query: Annotated[MatchQuery, Query()],
) -> CandidateList:
    line = await lines.get_editable_line(session, principal, demand_id)
    size = min(query.limit or settings.match_default_limit, settings.match_max_limit)
    return CandidateList.model_validate({"items": await match_service.line_candidates(session, line, size)})


# --- pipeline and matches ------------------------------------------------------------------------


@router.get(
    "/pipeline",
    tags=["pipeline"],
    summary="The aggregated pipeline, disclosure control applied",
    description=(
        "Group by any of cpv_division, cpv_group, quarter, anchor_type, value_band, suitable_for_vcse, "
        "suitable_for_sme, delivery_area (comma-separated). quarter is of the expected tender date, or of "
        "the contract start with quarter_of=contract_start; from and to are quarters (2027-Q1; a date "
        "selects its quarter). Figures come from the latest snapshot: public lines exactly; confidential "
        "(aggregate-only) demand only in views holding whole CPV division x tender quarter blocks, as of "
        "its last safe release (confidential_included on each figure, a note in confidential). "
        "ETag / If-None-Match."
    ),
    responses={200: {"model": PipelineView}, 304: {"description": "Not modified"}},
)
async def get_pipeline(
    request: Request,
    session: SessionDep,
    principal: SignedInDep,
    settings: SettingsDep,
    query: Annotated[PipelineQuery, Query()],
) -> Response:
    tag, body = await pipeline_service.pipeline_answer(
        session,
        query.view(),
        settings,
        request.app.state.pipeline_views,
        request.headers.get("if-none-match"),
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
    query: Annotated[MatchQuery, Query()],
) -> MatchList:
    access.require_match_reader(principal, enterprise_id)
    size = min(query.limit or settings.match_default_limit, settings.match_max_limit)
    return MatchList.model_validate(
        {"items": await match_service.enterprise_matches(session, enterprise_id, size)}
    )
