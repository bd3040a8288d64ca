"""The pipeline pages: ``/`` and ``/pipeline``, and the same view as CSV, JSON and OCDS.

Three views of one snapshot per page, revalidated by ETag and drawn once per release
(``pipeline_figures``, ``RenderedPipeline``), so a page costs the demand service one query.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from gateway.pages import charts
from gateway.pages.admission import ReaderDep, guard
from gateway.pages.figures import (
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
    quarter_bounds,
    quarter_label,
    quarters_from,
)
from gateway.pages.reader import Lru, PublicReader, View
from gateway.pages.rendering import SECURITY_HEADERS, download_headers, etag_matches, etag_of, page, render
from shared.downloads import csv_text

router = APIRouter()


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


class FilterChoices:
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
    heat = await guard(reader.pipeline(query.api_params("cpv_division,quarter", quarters)))
    cached = known.get(key)
    if cached is not None and cached.heat is heat:
        return cached
    for _ in range(3):
        by_quarter, by_division = await guard(
            asyncio.gather(
                reader.pipeline(query.api_params("quarter", quarters)),
                reader.pipeline(query.api_params("cpv_division", quarters)),
            )
        )
        # The three must be views of one snapshot; a release landing between them is rare.
        if heat.version == by_quarter.version == by_division.version:
            break
        heat = await guard(reader.pipeline(query.api_params("cpv_division,quarter", quarters)))
    choices: FilterChoices = state.pages_choices
    lists = await guard(choices.of(reader, quarters, heat.version))
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
    tag = etag_of(figures.heat.etag, figures.by_quarter.etag, figures.by_division.etag)
    html = render("pipeline.html", page="pipeline", **_pipeline_context(figures))
    rendered = RenderedPipeline(figures, html, tag)
    cache.put(query.query_string() + figures.quarters[0], rendered)
    return rendered


@router.get("/")
@router.get("/pipeline")
async def pipeline_page(request: Request, reader: ReaderDep) -> Response:
    rendered = await _rendered_pipeline(request, reader)
    return page(rendered.html, request, etag=rendered.etag)


async def _download_figures(
    request: Request, reader: PublicReader, query: PipelineQuery, kind: str
) -> tuple[PipelineFigures, str]:
    """The figures of a download and its ETag (from the three views it is made of)."""
    figures = await pipeline_figures(request, reader, query)
    return figures, etag_of(kind, figures.heat.etag, figures.by_quarter.etag, figures.by_division.etag)


@router.get("/pipeline.csv")
async def pipeline_csv(request: Request, reader: ReaderDep) -> Response:
    query = PipelineQuery.from_params(request.query_params)
    figures, etag = await _download_figures(request, reader, query, "csv")
    if etag_matches(request.headers.get("if-none-match"), etag):
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
    body = csv_text(header, rows)
    return Response(
        body, media_type="text/csv; charset=utf-8", headers=download_headers("seedbed-pipeline.csv", etag)
    )


@router.get("/pipeline.json")
async def pipeline_json(request: Request, reader: ReaderDep) -> Response:
    query = PipelineQuery.from_params(request.query_params)
    figures, etag = await _download_figures(request, reader, query, "json")
    if etag_matches(request.headers.get("if-none-match"), etag):
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
        headers=download_headers("seedbed-pipeline.json", etag),
    )


@router.get("/pipeline/ocds.json")
async def pipeline_ocds(request: Request, reader: ReaderDep) -> StreamingResponse:
    params = [
        (k, v) for k, v in request.query_params.multi_items() if k in ("cpv", "from", "to", "anchor_id")
    ]
    chunks = await guard(reader.ocds(params))
    return StreamingResponse(
        chunks,
        media_type="application/json",
        headers=SECURITY_HEADERS
        | {"Content-Disposition": 'attachment; filename="seedbed-ocds.json"', "Cache-Control": "no-store"},
    )
