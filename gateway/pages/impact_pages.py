"""The impact page: what the incubated enterprises bid for and won from the anchors.

It shows the shareable impact report, the one version of it the enterprises service gives to
anyone but staff: since records began, every figure that fewer than three enterprises' bids
stand behind withheld (and one more group where one alone would be), so no page singles out an
enterprise's confidential bid.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.pages.admission import ReaderDep, guard
from gateway.pages.rendering import etag_of, page, render

router = APIRouter()


@router.get("/impact")
async def impact_page(request: Request, reader: ReaderDep) -> Response:
    by_cohort = await guard(reader.impact("cohort"))
    by_division = await guard(reader.impact("cpv_division"))
    anchors = await guard(reader.anchors())
    names = {str(a["id"]): str(a["name"]) for a in anchors.items}
    won_from = [(names.get(str(w["anchor_id"]), "An anchor"), w) for w in by_cohort["won_from"]]
    etag = etag_of("impact", json.dumps([by_cohort, by_division, sorted(names.items())], sort_keys=True))
    body = render(
        "impact.html",
        page="impact",
        totals=by_cohort["totals"],
        cohorts=by_cohort["groups"],
        divisions=[g for g in by_division["groups"] if g["figures"]["pipeline_lines"]],
        won_from=won_from,
        won_from_withheld=by_cohort["won_from_withheld"],
    )
    return page(body, request, etag=etag)
