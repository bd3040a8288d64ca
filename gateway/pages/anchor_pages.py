"""The anchors pages: every anchor by type, and one anchor with its public lines by quarter.

An anchor's sums are of its public lines only, each public on its own, so they reveal nothing
the pipeline withholds; its type's share is the published pipeline's figure.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.pages import charts
from gateway.pages.admission import ReaderDep, guard
from gateway.pages.figures import (
    ANCHOR_TYPE_NAMES,
    LINE_SORTS,
    Cell,
    PipelineQuery,
    quarter_of,
    quarters_from,
)
from gateway.pages.rendering import etag_of, page, render

router = APIRouter()


@router.get("/anchors")
async def anchors_page(request: Request, reader: ReaderDep) -> Response:
    anchors = await guard(reader.anchors())
    items = sorted(anchors.items, key=lambda a: (str(a.get("type")), str(a["name"]).casefold()))
    groups: dict[str, list[dict[str, Any]]] = {}
    for anchor in items:
        groups.setdefault(str(anchor.get("type")), []).append(anchor)
    ordered = [(kind, groups[kind]) for kind in ANCHOR_TYPE_NAMES if kind in groups]
    ordered += [(kind, group) for kind, group in groups.items() if kind not in ANCHOR_TYPE_NAMES]
    etag = etag_of("anchors", json.dumps([(a["id"], a["version"]) for a in items]))
    body = render("anchors.html", page="anchors", groups=ordered, total=len(items), complete=anchors.complete)
    return page(body, request, etag=etag)


@router.get("/anchors/{anchor_id}")
async def anchor_page(anchor_id: str, request: Request, reader: ReaderDep) -> Response:
    anchor = await guard(reader.anchor(anchor_id))
    lines = await guard(reader.open_lines([("anchor_id", anchor_id)]))
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
    kind_view = await guard(
        reader.pipeline(
            PipelineQuery(anchor_type=str(anchor.get("type", ""))).api_params("quarter", quarters)
        )
    )
    kind_totals = Cell.of(kind_view.body.get("totals") or {"suppressed": True})
    upcoming = sorted(lines.items, key=LINE_SORTS["tender"][1])
    etag = etag_of(
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
