"""The pages' routes, their security headers, ETag/304, and ``install(app)``.

Every page is HTML rendered on the server with no script; the Content-Security-Policy
allows nothing but Seedbed's own stylesheet and images, so even text that slipped past
escaping could not run. Anonymous by default (``GATEWAY_PAGES_REQUIRE_KEY`` asks for a
bearer key), limited per client address (``GATEWAY_PAGES_RATE_LIMIT_PER_MINUTE``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from gateway.auth import AuthError
from gateway.pages import charts, downloads
from gateway.pages.figures import (
    ANCHOR_TYPE_NAMES,
    CATEGORY_NAMES,
    METHOD_NAMES,
    STATUS_NAMES,
    WITHHELD,
    Cell,
    PipelineQuery,
    anchor_type_name,
    area_name,
    band_name,
    band_order,
    cells_by,
    division_label,
    division_name,
    notes_of,
    percent,
    pounds,
    quarter_bounds,
    quarter_label,
    quarter_of,
    quarters_from,
    short_pounds,
)
from gateway.pages.reader import LineSet, Lru, NotFound, PublicReader, Refused, Unavailable, View
from gateway.runtime import GatewayRuntime
from gateway.settings import GatewaySettings
from shared.cpv import DIVISION_NAMES

HERE = Path(__file__).resolve().parent
STATIC_PREFIX = "/static/pages"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HTML = "text/html; charset=utf-8"
SORTS = {
    "tender": ("expected tender date", lambda line: line.get("expected_tender_date") or "9999"),
    "value": ("estimated value", lambda line: line.get("estimated_value_pence") or 0),
    "title": ("title", lambda line: str(line.get("title", "")).casefold()),
    "anchor": ("anchor", lambda line: str(line.get("_anchor_name", "")).casefold()),
    "posted": ("date posted", lambda line: line.get("created_at") or ""),
}


def _static_version() -> str:
    """A digest of the static files, in their URLs, so they can be cached for a year."""
    digest = hashlib.sha256()
    for path in sorted((HERE / "static").iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _templates_version() -> str:
    digest = hashlib.sha256()
    for path in sorted((HERE / "templates").iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


STATIC_VERSION = _static_version()
BUILD = _templates_version() + STATIC_VERSION

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    undefined=StrictUndefined,
    lstrip_blocks=True,
)
templates.globals |= {
    "static": lambda name: f"{STATIC_PREFIX}/{name}?v={STATIC_VERSION}",
    "WITHHELD": WITHHELD,
}
templates.filters |= {
    "pounds": pounds,
    "short_pounds": short_pounds,
    "percent": percent,
    "quarter_label": quarter_label,
    "division_label": division_label,
    "division_name": division_name,
    "anchor_type_name": anchor_type_name,
    "area_name": area_name,
    "band_name": band_name,
    "category_name": lambda v: CATEGORY_NAMES.get(v, v),
    "status_name": lambda v: STATUS_NAMES.get(v, v),
    "method_name": lambda v: METHOD_NAMES.get(v, v),
    "long_date": lambda v: date.fromisoformat(v[:10]).strftime("%-d %B %Y") if v else "not given",
    "number": lambda v: "withheld" if v is None else f"{v:,}",
    "fmt": lambda v, spec: format(v, spec),
}


class PageError(Exception):
    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}


def render(name: str, **context: Any) -> bytes:
    return templates.get_template(name).render(**context).encode()


def page(body: bytes, request: Request, *, status: int = 200, etag: str | None = None) -> Response:
    headers = dict(SECURITY_HEADERS)
    if etag is not None:
        headers["ETag"] = etag
        headers["Cache-Control"] = "no-cache"
        if status == 200 and _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
    else:
        headers["Cache-Control"] = "no-store"
    return Response(body, status_code=status, media_type=HTML, headers=headers)


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _etag(*parts: str) -> str:
    return '"page-' + hashlib.sha256("|".join((BUILD, *parts)).encode()).hexdigest()[:24] + '"'


async def _runtime(request: Request) -> GatewayRuntime:
    runtime: GatewayRuntime = request.app.state.runtime
    return runtime


async def _reader(request: Request) -> PublicReader:
    reader: PublicReader | None = getattr(request.app.state, "pages_reader", None)
    if reader is None:
        runtime = await _runtime(request)
        reader = PublicReader(runtime.settings, runtime.http, runtime.secret)
        request.app.state.pages_reader = reader
    return reader


async def admitted(request: Request) -> None:
    """The rate limit per client address, and the key when the settings ask for one."""
    runtime = await _runtime(request)
    settings = runtime.settings
    client = request.client.host if request.client else "unknown"
    decision = await runtime.limiter.admit(f"pages:{client}", settings.pages_rate_limit_per_minute, "public")
    if not decision.allowed:
        raise PageError(
            429,
            "Too many requests",
            f"Please wait {decision.retry_after_seconds} seconds and try again.",
            {"Retry-After": str(decision.retry_after_seconds)},
        )
    if settings.pages_require_key:
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="seedbed"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise PageError(401, "A key is needed", "These pages need an API key of this Seedbed.", challenge)
        try:
            await runtime.auth.authenticate(token.strip())
        except AuthError as exc:
            raise PageError(401, "A key is needed", str(exc), challenge) from None


router = APIRouter(dependencies=[Depends(admitted)], include_in_schema=False)
ReaderDep = Annotated[PublicReader, Depends(_reader)]


async def _guard(call: Awaitable[Any]) -> Any:
    """An upstream answer, or the page that says why there is none."""
    try:
        return await call
    except NotFound:
        raise PageError(404, "Not found", "There is nothing published at this address.") from None
    except Refused as exc:
        details = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in exc.errors) or exc.detail
        raise PageError(422, "Those filters cannot be used", details) from None
    except Unavailable:
        raise PageError(
            503,
            "The pipeline is unavailable",
            "Seedbed cannot reach the demand service right now; try again in a minute.",
        ) from None


# --- the pipeline ----------------------------------------------------------------------------------


@dataclass
class PipelineFigures:
    quarters: list[str]
    query: PipelineQuery
    heat: View
    by_quarter: View
    by_division: View
    choices: dict[str, list[tuple[str, str]]]

    @property
    def version(self) -> int:
        return self.heat.version

    @property
    def views(self) -> list[View]:
        return [self.by_quarter, self.by_division, self.heat]


@dataclass
class RenderedPipeline:
    figures: PipelineFigures
    html: bytes
    etag: str


class _Choices:
    """What each filter offers: the keys the published pipeline has, per snapshot version."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.lists: dict[str, list[tuple[str, str]]] = {}
        self.lock = asyncio.Lock()

    async def of(
        self, reader: PublicReader, quarters: list[str], version: int
    ) -> dict[str, list[tuple[str, str]]]:
        async with self.lock:
            if self.version == version and self.lists:
                return self.lists
            dims = ("anchor_type", "value_band", "delivery_area", "cpv_division")
            views = await asyncio.gather(
                *(reader.pipeline(PipelineQuery().api_params(dim, quarters)) for dim in dims)
            )
            keys = {
                dim: sorted({str(c["key"][dim]) for c in v.body.get("cells", [])})
                for dim, v in zip(dims, views, strict=True)
            }
            self.lists = {
                "anchor_type": [(k, anchor_type_name(k)) for k in keys["anchor_type"]],
                "value_band": [(k, band_name(k)) for k in sorted(keys["value_band"], key=band_order)],
                "delivery_area": [(k, area_name(k)) for k in keys["delivery_area"]],
                "cpv": [(k, division_label(k)) for k in keys["cpv_division"]],
            }
            self.version = version
            return self.lists


async def pipeline_figures(request: Request, reader: PublicReader, query: PipelineQuery) -> PipelineFigures:
    """The three views of a page, of one snapshot.

    One call per page when nothing was released: the heat map's view is revalidated by ETag,
    and while the service answers 304 the snapshot (the answer's ``version``) is the one the
    other two views were read from, so they stand. After a release all three are read again.
    """
    quarters = quarters_from(datetime.now(UTC).date())
    state = request.app.state
    known: Lru[PipelineFigures] = state.pages_figures
    key = query.query_string() + "|" + quarters[0]
    heat = await _guard(reader.pipeline(query.api_params("cpv_division,quarter", quarters)))
    cached = known.get(key)
    if cached is not None and cached.heat is heat:
        return cached
    for _ in range(3):
        by_quarter, by_division = await _guard(
            asyncio.gather(
                reader.pipeline(query.api_params("quarter", quarters)),
                reader.pipeline(query.api_params("cpv_division", quarters)),
            )
        )
        # The three must be views of one snapshot; a release landing between them is rare.
        if heat.version == by_quarter.version == by_division.version:
            break
        heat = await _guard(reader.pipeline(query.api_params("cpv_division,quarter", quarters)))
    choices: _Choices = state.pages_choices
    lists = await _guard(choices.of(reader, quarters, heat.version))
    figures = PipelineFigures(quarters, query, heat, by_quarter, by_division, lists)
    known.put(key, figures)
    return figures


def _pipeline_context(figures: PipelineFigures) -> dict[str, Any]:
    query, quarters = figures.query, figures.quarters
    by_quarter = cells_by(figures.by_quarter.body, "quarter")
    by_division = cells_by(figures.by_division.body, "cpv_division")
    heat = cells_by(figures.heat.body, "cpv_division", "quarter")
    divisions = sorted({k[0] for k in heat} | {k[0] for k in by_division})
    totals = Cell.of(figures.by_quarter.body.get("totals") or {"suppressed": True})
    link = (
        "/pipeline?" + urlencode([p for p in query.form() if p[0] != "cpv"]) + ("&" if query.form() else "")
    )
    link = link.replace("?&", "?")
    withheld = sum(c.suppressed for c in [*by_quarter.values(), *by_division.values(), *heat.values()])
    published_divisions = [(k[0], c) for k, c in by_division.items() if not c.suppressed and c.value_pence]
    published_quarters = [(k[0], c) for k, c in by_quarter.items() if not c.suppressed and c.value_pence]
    largest = max(published_divisions, key=lambda item: item[1].value_pence or 0, default=None)
    busiest = max(published_quarters, key=lambda item: item[1].value_pence or 0, default=None)
    generated = figures.heat.body.get("generated_at")
    return {
        "query": query,
        "filters_described": query.described(),
        "quarters": quarters,
        "first": quarter_label(quarters[0]),
        "last": quarter_label(quarters[-1]),
        "totals": totals,
        "quarter_rows": [(q, by_quarter.get((q,))) for q in quarters],
        "division_rows": sorted(
            ((key[0], cell) for key, cell in by_division.items()), key=lambda row: row[0]
        ),
        "heat_rows": [(d, [heat.get((d, q)) for q in quarters]) for d in divisions],
        "quarter_chart": charts.quarter_bars(quarters, by_quarter),
        "division_chart": charts.division_bars(by_division, link),
        "heat_map": charts.heat_map(divisions, quarters, heat),
        "withheld_count": withheld,
        "largest": largest,
        "busiest": busiest,
        "choices": figures.choices,
        "notes": notes_of(v.body for v in figures.views),
        "version": figures.version,
        "generated_at": generated,
        "disclosure": figures.heat.body.get("disclosure") or {},
        "query_string": query.query_string(),
        "ocds_query": "?" + urlencode(_ocds_params(query, quarters)),
        "published": generated is not None,
    }


def _ocds_params(query: PipelineQuery, quarters: list[str]) -> list[tuple[str, str]]:
    out = [
        ("from", quarter_bounds(quarters[0])[0].isoformat()),
        ("to", quarter_bounds(quarters[-1])[1].isoformat()),
    ]
    if query.cpv:
        out.append(("cpv", query.cpv))
    return out


async def _rendered_pipeline(request: Request, reader: PublicReader) -> RenderedPipeline:
    query = PipelineQuery.from_params(request.query_params)
    figures = await pipeline_figures(request, reader, query)
    cache: Lru[RenderedPipeline] = request.app.state.pages_rendered
    found = cache.get(query.query_string() + figures.quarters[0])
    if found is not None and found.figures is figures:
        return found
    tag = _etag(figures.heat.etag, figures.by_quarter.etag, figures.by_division.etag)
    html = render("pipeline.html", page="pipeline", **_pipeline_context(figures))
    rendered = RenderedPipeline(figures, html, tag)
    cache.put(query.query_string() + figures.quarters[0], rendered)
    return rendered


@router.get("/")
@router.get("/pipeline")
async def pipeline_page(request: Request, reader: ReaderDep) -> Response:
    rendered = await _rendered_pipeline(request, reader)
    return page(rendered.html, request, etag=rendered.etag)


def _download_headers(name: str, etag: str) -> dict[str, str]:
    return SECURITY_HEADERS | {
        "Content-Disposition": f'attachment; filename="{name}"',
        "ETag": etag,
        "Cache-Control": "no-cache",
    }


@router.get("/pipeline.csv")
async def pipeline_csv(request: Request, reader: ReaderDep) -> Response:
    query = PipelineQuery.from_params(request.query_params)
    figures = await pipeline_figures(request, reader, query)
    etag = _etag("csv", figures.heat.etag, figures.by_quarter.etag, figures.by_division.etag)
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    header = [
        "breakdown",
        "cpv_division",
        "cpv_division_name",
        "quarter",
        "opportunities",
        "total_value_pence",
        "anchors",
        "vcse_share",
        "sme_share",
        "withheld",
    ]
    rows: list[list[Any]] = []
    for label, view, dims in (
        ("total", figures.by_quarter, ()),
        ("quarter", figures.by_quarter, ("quarter",)),
        ("cpv_division", figures.by_division, ("cpv_division",)),
        ("cpv_division,quarter", figures.heat, ("cpv_division", "quarter")),
    ):
        cells = (
            [Cell.of(view.body.get("totals") or {"suppressed": True})]
            if not dims
            else [Cell.of(c) for c in view.body.get("cells", [])]
        )
        for cell in cells:
            division = str(cell.key.get("cpv_division", ""))
            rows.append(
                [
                    label,
                    division,
                    division_name(division) if division else "",
                    cell.key.get("quarter", ""),
                    cell.count,
                    cell.value_pence,
                    cell.anchors,
                    cell.vcse_share,
                    cell.sme_share,
                    cell.suppressed,
                ]
            )
    body = downloads.csv_text(header, rows)
    return Response(
        body, media_type="text/csv; charset=utf-8", headers=_download_headers("seedbed-pipeline.csv", etag)
    )


@router.get("/pipeline.json")
async def pipeline_json(request: Request, reader: ReaderDep) -> Response:
    query = PipelineQuery.from_params(request.query_params)
    figures = await pipeline_figures(request, reader, query)
    etag = _etag("json", figures.heat.etag, figures.by_quarter.etag, figures.by_division.etag)
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    body = {
        "quarters": figures.quarters,
        "filters": dict(query.form()),
        "by_quarter": figures.by_quarter.body,
        "by_cpv_division": figures.by_division.body,
        "by_cpv_division_and_quarter": figures.heat.body,
        "cpv_division_names": {
            d: division_name(d)
            for d in {str(c["key"]["cpv_division"]) for c in figures.by_division.body.get("cells", [])}
        },
    }
    return Response(
        json.dumps(body, ensure_ascii=False, indent=1).encode(),
        media_type="application/json",
        headers=_download_headers("seedbed-pipeline.json", etag),
    )


@router.get("/pipeline/ocds.json")
async def pipeline_ocds(request: Request, reader: ReaderDep) -> StreamingResponse:
    params = [
        (k, v) for k, v in request.query_params.multi_items() if k in ("cpv", "from", "to", "anchor_id")
    ]
    chunks = await _guard(reader.ocds(params))
    return StreamingResponse(
        chunks,
        media_type="application/json",
        headers=SECURITY_HEADERS
        | {"Content-Disposition": 'attachment; filename="seedbed-ocds.json"', "Cache-Control": "no-store"},
    )


# --- lines -------------------------------------------------------------------------------------------


@dataclass
class LinesQuery:
    cpv: str = ""
    category: str = ""
    anchor_id: str = ""
    vcse: bool = False
    sme: bool = False
    sort: str = "tender"
    order: str = "asc"
    page: int = 1

    @classmethod
    def from_request(cls, request: Request) -> LinesQuery:
        params = request.query_params
        sort = params.get("sort", "tender")
        try:
            number = max(1, int(params.get("page", "1")))
        except ValueError:
            number = 1
        return cls(
            cpv=(params.get("cpv") or "").strip(),
            category=(params.get("category") or "").strip(),
            anchor_id=(params.get("anchor_id") or "").strip(),
            vcse=params.get("suitable_for_vcse") in ("true", "on", "1"),
            sme=params.get("suitable_for_sme") in ("true", "on", "1"),
            sort=sort if sort in SORTS else "tender",
            order="desc" if params.get("order") == "desc" else "asc",
            page=number,
        )

    def filters(self) -> list[tuple[str, str]]:
        out = [
            (k, v)
            for k, v in (("cpv", self.cpv), ("category", self.category), ("anchor_id", self.anchor_id))
            if v
        ]
        if self.vcse:
            out.append(("suitable_for_vcse", "true"))
        if self.sme:
            out.append(("suitable_for_sme", "true"))
        return out

    def url(self, **change: Any) -> str:
        values = {"sort": self.sort, "order": self.order, "page": self.page} | change
        pairs = [*self.filters(), ("sort", values["sort"]), ("order", values["order"])]
        if values["page"] != 1:
            pairs.append(("page", str(values["page"])))
        return "/pipeline/lines?" + urlencode(pairs)


def _anchor_names(anchors: LineSet) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in anchors.items}


@router.get("/pipeline/lines")
async def lines_page(request: Request, reader: ReaderDep) -> Response:
    query = LinesQuery.from_request(request)
    lines, anchors = await _guard(asyncio.gather(reader.open_lines(query.filters()), reader.anchors()))
    names = _anchor_names(anchors)
    items = [
        dict(line, _anchor_name=names.get(line["anchor_id"], {}).get("name", "")) for line in lines.items
    ]
    items.sort(key=SORTS[query.sort][1], reverse=query.order == "desc")
    size = reader.settings.pages_lines_per_page
    pages = max(1, -(-len(items) // size))
    number = min(query.page, pages)
    shown = items[(number - 1) * size : number * size]
    etag = _etag(
        "lines", request.url.query, json.dumps([(i["id"], i["version"]) for i in shown]), str(len(items))
    )
    body = render(
        "lines.html",
        page="lines",
        query=query,
        lines=shown,
        total=len(items),
        complete=lines.complete,
        limit=reader.settings.pages_lines_max,
        number=number,
        pages=pages,
        sorts={k: v[0] for k, v in SORTS.items()},
        anchors=sorted(anchors.items, key=lambda a: str(a["name"]).casefold()),
        categories=CATEGORY_NAMES,
        divisions=[(d, division_label(d)) for d in sorted(DIVISION_NAMES)],
        csv_url="/pipeline/lines.csv?"
        + urlencode([*query.filters(), ("sort", query.sort), ("order", query.order)]),
    )
    return page(body, request, etag=etag)


@router.get("/pipeline/lines.csv")
async def lines_csv(request: Request, reader: ReaderDep) -> Response:
    query = LinesQuery.from_request(request)
    lines, anchors = await _guard(asyncio.gather(reader.open_lines(query.filters()), reader.anchors()))
    names = _anchor_names(anchors)
    items = [
        dict(line, _anchor_name=names.get(line["anchor_id"], {}).get("name", "")) for line in lines.items
    ]
    items.sort(key=SORTS[query.sort][1], reverse=query.order == "desc")
    header = [
        "id",
        "title",
        "anchor",
        "anchor_type",
        "status",
        "category",
        "cpv_codes",
        "estimated_value_pence",
        "expected_tender_date",
        "contract_start",
        "duration_months",
        "lots",
        "suitable_for_sme",
        "suitable_for_vcse",
        "delivery_area",
        "requirements",
        "url",
    ]
    rows = [
        [
            line["id"],
            line.get("title"),
            line["_anchor_name"],
            line.get("anchor_type"),
            line.get("status"),
            line.get("category"),
            ";".join(line.get("cpv_codes") or []),
            line.get("estimated_value_pence"),
            line.get("expected_tender_date"),
            line.get("contract_start"),
            line.get("duration_months"),
            len(line.get("lots") or []),
            line.get("suitable_for_sme"),
            line.get("suitable_for_vcse"),
            (line.get("delivery_area") or {}).get("label"),
            ";".join(r.get("code", "") for r in line.get("requirements") or []),
            f"/pipeline/lines/{line['id']}",
        ]
        for line in items
    ]
    etag = _etag("lines.csv", request.url.query, json.dumps([(i["id"], i["version"]) for i in items]))
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(
        downloads.csv_text(header, rows),
        media_type="text/csv; charset=utf-8",
        headers=_download_headers("seedbed-lines.csv", etag),
    )


@router.get("/pipeline/lines/{line_id}")
async def line_page(line_id: str, request: Request, reader: ReaderDep) -> Response:
    line, milestones = await _guard(asyncio.gather(reader.line(line_id), reader.milestone_names()))
    anchor = await _guard(reader.anchor(line["anchor_id"]))
    requirements = [
        {
            "code": r.get("code", ""),
            "name": (milestones.get(r.get("code", "")) or {}).get("name")
            or str(r.get("code", "")).replace("_", " ").capitalize(),
            "description": (milestones.get(r.get("code", "")) or {}).get("description"),
            "min_value_pence": r.get("min_value_pence"),
        }
        for r in line.get("requirements") or []
    ]
    etag = _etag("line", line["id"], str(line["version"]), str(anchor.get("version")), str(len(milestones)))
    body = render("line.html", page="lines", line=line, anchor=anchor, requirements=requirements)
    return page(body, request, etag=etag)


# --- anchors -----------------------------------------------------------------------------------------


@router.get("/anchors")
async def anchors_page(request: Request, reader: ReaderDep) -> Response:
    anchors = await _guard(reader.anchors())
    items = sorted(anchors.items, key=lambda a: (str(a.get("type")), str(a["name"]).casefold()))
    groups: dict[str, list[dict[str, Any]]] = {}
    for anchor in items:
        groups.setdefault(str(anchor.get("type")), []).append(anchor)
    ordered = [(kind, groups[kind]) for kind in ANCHOR_TYPE_NAMES if kind in groups]
    ordered += [(kind, group) for kind, group in groups.items() if kind not in ANCHOR_TYPE_NAMES]
    etag = _etag("anchors", json.dumps([(a["id"], a["version"]) for a in items]))
    body = render("anchors.html", page="anchors", groups=ordered, total=len(items), complete=anchors.complete)
    return page(body, request, etag=etag)


@router.get("/anchors/{anchor_id}")
async def anchor_page(anchor_id: str, request: Request, reader: ReaderDep) -> Response:
    anchor = await _guard(reader.anchor(anchor_id))
    lines = await _guard(reader.open_lines([("anchor_id", anchor_id)]))
    quarters = quarters_from(datetime.now(UTC).date())
    # Its public lines are public one by one: their sums by quarter reveal nothing more.
    sums: dict[str, list[int]] = {q: [0, 0] for q in quarters}
    for line in lines.items:
        tender = line.get("expected_tender_date")
        quarter = quarter_of(date.fromisoformat(tender)) if tender else None
        if quarter in sums:
            sums[quarter][0] += 1
            sums[quarter][1] += int(line.get("estimated_value_pence") or 0)
    cells = {(q,): Cell({"quarter": q}, n, v, 1, None, None, False) for q, (n, v) in sums.items() if n}
    kind_view = await _guard(
        reader.pipeline(
            PipelineQuery(anchor_type=str(anchor.get("type", ""))).api_params("quarter", quarters)
        )
    )
    kind_totals = Cell.of(kind_view.body.get("totals") or {"suppressed": True})
    upcoming = sorted(lines.items, key=SORTS["tender"][1])
    etag = _etag(
        "anchor",
        anchor_id,
        str(anchor.get("version")),
        kind_view.etag,
        json.dumps([(i["id"], i["version"]) for i in upcoming]),
    )
    body = render(
        "anchor.html",
        page="anchors",
        anchor=anchor,
        lines=upcoming,
        complete=lines.complete,
        quarters=quarters,
        quarter_rows=[(q, cells.get((q,))) for q in quarters],
        chart=charts.quarter_bars(quarters, cells),
        public_total=sum(v for _, v in sums.values()),
        public_count=sum(n for n, _ in sums.values()),
        kind_totals=kind_totals,
        kind_link="/pipeline?" + urlencode([("anchor_type", str(anchor.get("type", "")))]),
    )
    return page(body, request, etag=etag)


# --- wiring ------------------------------------------------------------------------------------------


def _error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    body = render("error.html", page="", status=exc.status, title=exc.title, detail=exc.detail)
    response = page(body, request, status=exc.status)
    response.headers.update(exc.headers)
    return response


class _Static(StaticFiles):
    """The stylesheet and icon, cached for a year (their URLs change with their content)."""

    async def get_response(self, path: str, scope: Any) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install(app: FastAPI, settings: GatewaySettings) -> None:
    """Add the pages to the gateway's app: the routes, the static files, the error page."""
    app.include_router(router)
    app.mount(STATIC_PREFIX, _Static(directory=HERE / "static"), name="pages-static")
    app.add_exception_handler(PageError, _error_page)  # type: ignore[arg-type]
    app.state.pages_choices = _Choices()
    app.state.pages_figures = Lru[PipelineFigures](settings.pages_cache_size)
    app.state.pages_rendered = Lru[RenderedPipeline](settings.pages_cache_size)


__all__ = ["PageError", "install", "router"]
