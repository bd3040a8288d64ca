"""The lines pages: upcoming public lines filtered, sorted and paged, their CSV, and one line.

The demand API has no sort parameter, so these pages sort the lines they read (``LINE_SORTS``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.pages.admission import ReaderDep, guard
from gateway.pages.figures import CATEGORY_NAMES, LINE_SORTS, division_label
from gateway.pages.reader import LineSet, PublicReader
from gateway.pages.rendering import download_headers, etag_matches, etag_of, page, render
from shared.cpv import DIVISION_NAMES
from shared.downloads import csv_text

router = APIRouter()


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
            sort=sort if sort in LINE_SORTS else "tender",
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


async def _sorted_lines(
    reader: PublicReader, query: LinesQuery
) -> tuple[LineSet, LineSet, list[dict[str, Any]]]:
    """The open lines the query asks for, each with its anchor's name, in the query's order
    (and the answers they came from: the lines and the anchors)."""
    lines, anchors = await guard(asyncio.gather(reader.open_lines(query.filters()), reader.anchors()))
    names = {a["id"]: a for a in anchors.items}
    items = [
        dict(line, _anchor_name=names.get(line["anchor_id"], {}).get("name", "")) for line in lines.items
    ]
    items.sort(key=LINE_SORTS[query.sort][1], reverse=query.order == "desc")
    return lines, anchors, items


@router.get("/pipeline/lines")
async def lines_page(request: Request, reader: ReaderDep) -> Response:
    query = LinesQuery.from_request(request)
    lines, anchors, items = await _sorted_lines(reader, query)
    size = reader.settings.pages_lines_per_page
    pages = max(1, -(-len(items) // size))
    number = min(query.page, pages)
    shown = items[(number - 1) * size : number * size]
    etag = etag_of(
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
        sorts={k: v[0] for k, v in LINE_SORTS.items()},
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
    _, _, items = await _sorted_lines(reader, query)
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
    etag = etag_of("lines.csv", request.url.query, json.dumps([(i["id"], i["version"]) for i in items]))
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(
        csv_text(header, rows),
        media_type="text/csv; charset=utf-8",
        headers=download_headers("seedbed-lines.csv", etag),
    )


@router.get("/pipeline/lines/{line_id}")
async def line_page(line_id: str, request: Request, reader: ReaderDep) -> Response:
    line, milestones = await guard(asyncio.gather(reader.line(line_id), reader.milestone_names()))
    anchor = await guard(reader.anchor(line["anchor_id"]))
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
    etag = etag_of("line", line["id"], str(line["version"]), str(anchor.get("version")), str(len(milestones)))
    body = render("line.html", page="lines", line=line, anchor=anchor, requirements=requirements)
    return page(body, request, etag=etag)
