"""A line not yet tendering cannot be given an expected tender date in the past (API and imports)."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi import FastAPI

from services.demand.tests.conftest import anchor_principal, line_body
from shared.db import utcnow
from shared.testing.apps import STAFF, client

PAST = "2020-01-01"


def _errors(response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return {e["field"]: e["message"] for e in response.json()["errors"]}


async def test_a_planned_line_with_a_past_tender_date_is_refused_naming_the_field(
    app: FastAPI, new_anchor
) -> None:
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        for status in ("planned", "draft"):
            response = await http.post(
                "/api/v1/demand", json=line_body(status=status, expected_tender_date=PAST)
            )
            errors = _errors(response)
            assert set(errors) == {"expected_tender_date"}
            assert "in the past" in errors["expected_tender_date"]
        yesterday = (utcnow().date() - timedelta(days=1)).isoformat()
        assert _errors(await http.post("/api/v1/demand", json=line_body(expected_tender_date=yesterday)))
        today = utcnow().date().isoformat()
        assert (
            await http.post("/api/v1/demand", json=line_body(expected_tender_date=today))
        ).status_code == 201
        # A line already tendering may say when its tender started.
        tendering = await http.post(
            "/api/v1/demand", json=line_body(status="tendering", expected_tender_date=PAST)
        )
        assert tendering.status_code == 201, tendering.text
        lines = (await http.get("/api/v1/demand")).json()["items"]
    assert len(lines) == 2


async def test_a_patch_to_a_past_tender_date_is_refused(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        created = (await http.post("/api/v1/demand", json=line_body())).json()
        response = await http.patch(
            f"/api/v1/demand/{created['id']}",
            json={"expected_tender_date": PAST},
            headers={"If-Match": f'"{created["version"]}"'},
        )
        assert set(_errors(response)) == {"expected_tender_date"}
        line = (await http.get(f"/api/v1/demand/{created['id']}")).json()
    assert line["expected_tender_date"] == created["expected_tender_date"] and line["version"] == 1


async def test_an_import_row_with_a_past_tender_date_is_refused_and_nothing_is_written(
    app: FastAPI, new_anchor
) -> None:
    anchor = await new_anchor()
    rows = "\n".join(
        json.dumps(line_body(external_ref=ref, **overrides))
        for ref, overrides in (("R-1", {}), ("R-2", {"expected_tender_date": PAST}))
    )
    async with client(app, anchor_principal(anchor["id"])) as http:
        response = await http.post(
            "/api/v1/demand/imports", content=rows.encode(), headers={"Content-Type": "application/x-ndjson"}
        )
    assert response.status_code == 422, response.text
    assert [(e["row"], e["field"]) for e in response.json()["errors"]] == [(2, "expected_tender_date")]
    async with client(app, STAFF) as http:
        assert (await http.get("/api/v1/demand")).json()["items"] == []
