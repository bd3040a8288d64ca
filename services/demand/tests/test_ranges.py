"""Every number and date of a demand line has a sane range, enforced on every way in, and one
stored line the OCDS export cannot express is left out instead of breaking the export."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from services.demand.models import demand_lines
from services.demand.tests.conftest import INTEGRATOR, anchor_principal, line_body
from shared.testing.apps import STAFF, client

TOO_BIG = 2**63 - 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"estimated_value_pence": TOO_BIG}, "estimated_value_pence"),
        ({"estimated_value_pence": 2**63}, "estimated_value_pence"),
        ({"max_value_pence": TOO_BIG}, "max_value_pence"),
        ({"lots": [{"title": "Lot", "estimated_value_pence": TOO_BIG}]}, "lots.0.estimated_value_pence"),
        (
            {"requirements": [{"code": "insurance", "min_value_pence": TOO_BIG}]},
            "requirements.0.min_value_pence",
        ),
        ({"contract_start": "9999-12-01"}, "contract_start"),
        ({"expected_tender_date": "0001-01-01"}, "expected_tender_date"),
        ({"duration_months": 100_000}, "duration_months"),
    ],
)
async def test_out_of_range_numbers_and_dates_are_refused_naming_the_field(
    app: FastAPI, new_anchor, overrides: dict, field: str
) -> None:
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        posted = await http.post("/api/v1/demand", json=line_body(**overrides))
        created = await http.post("/api/v1/demand", json=line_body())
        patched = await http.patch(f"/api/v1/demand/{created.json()['id']}", json=overrides)
        ndjson = await http.post(
            "/api/v1/demand/imports",
            content=json.dumps(line_body(external_ref="R-1", **overrides)).encode(),
            headers={"Content-Type": "application/x-ndjson"},
        )
        listed = await http.get("/api/v1/demand", params={"anchor_id": anchor["id"]})
    for response in (posted, patched, ndjson):
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["errors"]]
    assert len(listed.json()["items"]) == 1  # only the valid line


async def test_anchor_spend_is_bounded(app: FastAPI) -> None:
    async with client(app, STAFF) as http:
        response = await http.post(
            "/api/v1/anchors", json={"name": "Big", "type": "police", "annual_third_party_spend_pence": 2**63}
        )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["annual_third_party_spend_pence"]


async def test_ocds_input_out_of_range_is_refused_naming_the_field(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()

    def release(ocid: str, value: str, start: str) -> dict:
        return {
            "ocid": ocid,
            "tag": ["planning"],
            "buyer": {"id": anchor["id"], "name": anchor["name"]},
            "tender": {
                "title": "Huge",
                "value": {"amount": value, "currency": "GBP"},
                "mainProcurementCategory": "services",
                "items": [{"id": "1", "classification": {"scheme": "CPV", "id": "55520000"}}],
                "contractPeriod": {"startDate": start, "durationInDays": 7300},
            },
        }

    package = {
        "releases": [
            release("ocds-x-1", "Infinity", "2027-12-01T00:00:00Z"),
            release("ocds-x-2", "1000", "9999-12-01T00:00:00Z"),
        ]
    }
    async with client(app, anchor_principal(anchor["id"])) as http:
        response = await http.post(
            "/api/v1/demand/imports",
            content=json.dumps(package),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 422, response.text
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"tender.value.amount", "contract_start"} <= fields, response.text


async def test_ocds_export_leaves_out_a_line_it_cannot_express_and_serves_the_rest(
    app: FastAPI, new_anchor
) -> None:
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        good = (await http.post("/api/v1/demand", json=line_body(title="Good"))).json()
        bad = (await http.post("/api/v1/demand", json=line_body(title="Stored before the ranges"))).json()
    # A line stored before the ranges were enforced: its contract would end after year 9999.
    async with app.state.database.transaction() as session:
        await session.execute(
            sa.update(demand_lines)
            .where(demand_lines.c.id == bad["id"])
            .values(contract_start=sa.func.date("9999-12-01"), duration_months=240)
        )
    async with client(app, INTEGRATOR) as http:
        response = await http.get("/api/v1/demand/ocds")
    assert response.status_code == 200
    package = response.json()
    assert [r["tender"]["id"] for r in package["releases"]] == [good["id"]]
