"""Awards through the API: who may set and read them, corrections, validation, the line's status,
``demand.item.awarded.v1`` (public lines only), the pipeline and the OCDS export."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from services.demand import ocds
from services.demand.events import DemandAwardedPayload
from services.demand.tests.conftest import (
    INTEGRATOR,
    MENTOR,
    anchor_principal,
    enterprise_principal,
    line_body,
    outbox_events,
)
from services.demand.tests.test_ocds_extension import extended_validator
from shared.testing.apps import STAFF, client

AWARDED_FIELDS = {
    "demand_id", "version", "anchor_id", "status", "supplier_name", "supplier_registration_number",
    "enterprise_id", "contract_value_pence", "awarded_on",
}  # fmt: skip
ENTERPRISE_ID = str(uuid.uuid4())


def award_body(**overrides: Any) -> dict[str, Any]:
    """A valid award; ``overrides`` replace fields (None removes one)."""
    body: dict[str, Any] = {
        "supplier_name": "Leeds Community Kitchens CIC",
        "supplier_registration_number": "12345678",
        "enterprise_id": ENTERPRISE_ID,
        "contract_value_pence": 45_000_000,
        "awarded_on": "2026-11-20",
    }
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


async def post_line(app: FastAPI, anchor_id: str, **overrides: Any) -> dict[str, Any]:
    async with client(app, anchor_principal(anchor_id)) as http:
        response = await http.post("/api/v1/demand", json=line_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


def award_url(line: dict[str, Any]) -> str:
    return f"/api/v1/demand/{line['id']}/award"


async def awarded_events(app: FastAPI) -> list[dict[str, Any]]:
    return [e for e in await outbox_events(app) if e["type"] == "demand.item.awarded.v1"]


async def test_anchor_awards_its_line_and_the_line_shows_it(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"], status="tendering")
    async with client(app, anchor_principal(anchor["id"])) as http:
        put = await http.put(award_url(line), json=award_body(supplier_registration_number="sc 123 456"))
        got = await http.get(award_url(line))
        shown = await http.get(f"/api/v1/demand/{line['id']}")
        history = await http.get(f"/api/v1/demand/{line['id']}/history")
    assert put.status_code == 201, put.text
    assert put.headers["location"] == award_url(line) and put.headers["etag"] == '"1"'
    award = put.json()
    assert award["supplier_registration_number"] == "SC123456"
    assert award["demand_id"] == line["id"] and award["version"] == 1
    assert award["recorded_by"] == f"key-{anchor['id'][:8]}"
    assert award["enterprise_id"] == ENTERPRISE_ID and award["awarded_on"] == "2026-11-20"
    assert got.status_code == 200 and got.json() == award and got.headers["etag"] == '"1"'
    assert shown.json()["status"] == "awarded" and shown.json()["version"] == 2
    assert shown.json()["award"] == award and shown.headers["etag"] == '"2"'
    assert history.json()["items"][0]["changed_fields"] == ["status", "award"]


async def test_a_planned_line_can_be_awarded_directly(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"], status="planned", procurement_method="direct")
    async with client(app, STAFF) as http:
        put = await http.put(award_url(line), json=award_body())
        shown = await http.get(f"/api/v1/demand/{line['id']}")
    assert put.status_code == 201, put.text
    assert put.json()["recorded_by"] == STAFF.actor
    assert shown.json()["status"] == "awarded"


async def test_only_the_lines_anchor_and_staff_may_award_it(app: FastAPI, new_anchor) -> None:
    owner, other = await new_anchor(), await new_anchor()
    line = await post_line(app, owner["id"], status="tendering")
    hidden = await post_line(app, owner["id"], status="tendering", visibility="aggregate_only")
    refused = {}
    for name, principal in (
        ("other anchor", anchor_principal(other["id"])),
        ("enterprise", enterprise_principal(str(uuid.uuid4()))),
        ("mentor", MENTOR),
        ("integrator", INTEGRATOR),
    ):
        async with client(app, principal) as http:
            public_put = await http.put(award_url(line), json=award_body())
            hidden_put = await http.put(award_url(hidden), json=award_body())
        refused[name] = (public_put.status_code, hidden_put.status_code)
    # As for PATCH: 403 for a public line they see, 404 for one they may not know of.
    assert refused == {name: (403, 404) for name in refused}
    assert await awarded_events(app) == []
    async with client(app, STAFF) as http:
        by_staff = await http.put(award_url(line), json=award_body())
    assert by_staff.status_code == 201


async def test_a_public_lines_award_is_read_by_anyone_who_sees_the_line(app: FastAPI, new_anchor) -> None:
    owner, other = await new_anchor(), await new_anchor()
    line = await post_line(app, owner["id"], status="tendering")
    async with client(app, anchor_principal(owner["id"])) as http:
        award = (await http.put(award_url(line), json=award_body())).json()
    for principal in (anchor_principal(other["id"]), enterprise_principal(ENTERPRISE_ID), INTEGRATOR, STAFF):
        async with client(app, principal) as http:
            got = await http.get(award_url(line))
            shown = await http.get(f"/api/v1/demand/{line['id']}")
        assert got.status_code == 200 and got.json() == award, principal.role
        assert shown.json()["award"] == award, principal.role


async def test_a_line_without_an_award_answers_404_and_shows_null(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"])
    async with client(app, INTEGRATOR) as http:
        got = await http.get(award_url(line))
        shown = await http.get(f"/api/v1/demand/{line['id']}")
        unknown = await http.get(f"/api/v1/demand/{uuid.uuid4()}/award")
    assert got.status_code == 404 and got.headers["content-type"] == "application/problem+json"
    assert got.json()["title"] == "Award not found"
    assert shown.json()["award"] is None
    assert unknown.status_code == 404 and unknown.json()["title"] == "Demand line not found"


async def test_a_correction_makes_a_new_version_and_event_and_a_repeat_nothing(
    app: FastAPI, new_anchor
) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"], status="tendering")
    async with client(app, anchor_principal(anchor["id"])) as http:
        first = await http.put(award_url(line), json=award_body())
        corrected = await http.put(award_url(line), json=award_body(contract_value_pence=46_000_000))
        count = len(await outbox_events(app))
        repeated = await http.put(award_url(line), json=award_body(contract_value_pence=46_000_000))
        shown = await http.get(f"/api/v1/demand/{line['id']}")
    assert first.status_code == 201
    assert corrected.status_code == 200 and corrected.json()["version"] == 2
    assert corrected.json()["recorded_at"] == first.json()["recorded_at"]
    assert corrected.json()["contract_value_pence"] == 46_000_000
    assert repeated.status_code == 200 and repeated.json() == corrected.json()
    assert len(await outbox_events(app)) == count  # the repeat changed and published nothing
    assert shown.json()["version"] == 3
    events = await awarded_events(app)
    assert [(e["data"]["version"], e["data"]["contract_value_pence"]) for e in events] == [
        (2, 45_000_000),
        (3, 46_000_000),
    ]
    items = [e for e in await outbox_events(app) if e["type"] == "demand.item.updated.v1"]
    assert [e["data"]["version"] for e in items] == [2, 3]
    assert all(e["data"]["status"] == "awarded" for e in items)


async def test_if_match_names_the_awards_version(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"], status="tendering")
    async with client(app, anchor_principal(anchor["id"])) as http:
        first = await http.put(award_url(line), json=award_body(), headers={"If-Match": '"0"'})
        again = await http.put(award_url(line), json=award_body(), headers={"If-Match": '"0"'})
        stale = await http.put(
            award_url(line), json=award_body(supplier_name="Other Ltd"), headers={"If-Match": '"2"'}
        )
        current = await http.put(
            award_url(line), json=award_body(supplier_name="Other Ltd"), headers={"If-Match": '"1"'}
        )
    assert first.status_code == 201
    assert again.status_code == 412 and stale.status_code == 412
    assert current.status_code == 200 and current.json()["supplier_name"] == "Other Ltd"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"contract_value_pence": -1}, "contract_value_pence"),
        ({"awarded_on": "TOMORROW"}, "awarded_on"),
        ({"supplier_name": None}, "supplier_name"),
        ({"supplier_name": "  "}, "supplier_name"),
        ({"supplier_registration_number": "1234567890ABCDEFGHIJK"}, "supplier_registration_number"),
        ({"supplier_registration_number": "12-345"}, "supplier_registration_number"),
        ({"enterprise_id": "not-a-uuid"}, "enterprise_id"),
    ],
)
async def test_a_bad_award_is_refused_naming_the_field(
    app: FastAPI, new_anchor, overrides: dict[str, Any], field: str
) -> None:
    if overrides.get("awarded_on") == "TOMORROW":
        overrides = {"awarded_on": (datetime.now(UTC).date() + timedelta(days=1)).isoformat()}
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"], status="tendering")
    async with client(app, anchor_principal(anchor["id"])) as http:
        response = await http.put(award_url(line), json=award_body(**overrides))
        shown = await http.get(f"/api/v1/demand/{line['id']}")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert shown.json()["status"] == "tendering" and shown.json()["award"] is None


@pytest.mark.parametrize("status", ["draft", "cancelled", "withdrawn"])
async def test_a_draft_or_closed_line_cannot_be_awarded(app: FastAPI, new_anchor, status: str) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"], status="draft" if status == "draft" else "planned")
    async with client(app, anchor_principal(anchor["id"])) as http:
        if status != "draft":
            closed = await http.patch(f"/api/v1/demand/{line['id']}", json={"status": status})
            assert closed.status_code == 200, closed.text
        response = await http.put(award_url(line), json=award_body())
        got = await http.get(award_url(line))
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["status"]
    assert got.status_code == 404
    assert await awarded_events(app) == []


async def test_a_public_award_is_published_once_with_its_payload(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"], status="tendering")
    async with client(app, anchor_principal(anchor["id"])) as http:
        assert (await http.put(award_url(line), json=award_body())).status_code == 201
    [event] = await awarded_events(app)
    assert event["subject"] == line["id"] and event["source"].endswith("demand")
    assert set(event["data"]) == AWARDED_FIELDS
    DemandAwardedPayload.model_validate(event["data"])
    assert event["data"] == {
        "demand_id": line["id"],
        "version": 2,
        "anchor_id": anchor["id"],
        "status": "awarded",
        "supplier_name": "Leeds Community Kitchens CIC",
        "supplier_registration_number": "12345678",
        "enterprise_id": ENTERPRISE_ID,
        "contract_value_pence": 45_000_000,
        "awarded_on": "2026-11-20",
    }


async def test_an_aggregate_only_award_is_never_published_and_stays_hidden(app: FastAPI, new_anchor) -> None:
    owner, other = await new_anchor(), await new_anchor()
    line = await post_line(app, owner["id"], status="tendering", visibility="aggregate_only")
    async with client(app, anchor_principal(owner["id"])) as http:
        put = await http.put(award_url(line), json=award_body())
        own = await http.get(award_url(line))
    assert put.status_code == 201 and own.status_code == 200
    async with client(app, STAFF) as http:
        assert (await http.get(award_url(line))).status_code == 200
    for principal in (anchor_principal(other["id"]), INTEGRATOR, enterprise_principal(ENTERPRISE_ID)):
        async with client(app, principal) as http:
            got = await http.get(award_url(line))
        assert got.status_code == 404 and got.json()["title"] == "Demand line not found", principal.role
    assert all(line["id"] not in str(e) for e in await outbox_events(app))


async def test_an_awarded_line_leaves_the_pipeline(app: FastAPI, new_anchor, refresh) -> None:
    anchor = await new_anchor()
    kept = await post_line(app, anchor["id"], estimated_value_pence=1_000_000)
    line = await post_line(app, anchor["id"], status="tendering", estimated_value_pence=2_000_000)
    await refresh()
    async with client(app, INTEGRATOR) as http:
        before = (await http.get("/api/v1/pipeline")).json()["totals"]
    async with client(app, anchor_principal(anchor["id"])) as http:
        assert (await http.put(award_url(line), json=award_body())).status_code == 201
    await refresh()
    async with client(app, INTEGRATOR) as http:
        after = (await http.get("/api/v1/pipeline")).json()["totals"]
        matches_line = await http.get(f"/api/v1/demand/{kept['id']}")
    assert (before["count"], before["total_value_pence"]) == (2, 3_000_000)
    assert (after["count"], after["total_value_pence"]) == (1, 1_000_000)
    assert matches_line.status_code == 200


async def test_the_ocds_export_carries_the_award_and_validates(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    company = await post_line(app, anchor["id"], status="tendering", title="Catering, company won")
    charity = await post_line(app, anchor["id"], status="tendering", title="Catering, charity won")
    open_line = await post_line(app, anchor["id"], title="Catering, still planned")
    hidden = await post_line(app, anchor["id"], status="tendering", visibility="aggregate_only")
    async with client(app, anchor_principal(anchor["id"])) as http:
        for line, body in (
            (company, award_body()),
            (company, award_body(contract_value_pence=45_000_050)),  # a correction
            (
                charity,
                award_body(supplier_name="Chapeltown Food Trust", supplier_registration_number="1123456"),
            ),
            (hidden, award_body()),
        ):
            assert (await http.put(award_url(line), json=body)).status_code in (200, 201)
    async with client(app, INTEGRATOR) as http:
        document = (await http.get("/api/v1/demand/ocds")).json()
        patch = (await http.get("/api/v1/demand/ocds/extension/release-schema.json")).json()
    releases = {r["tender"]["id"]: r for r in document["releases"]}
    assert set(releases) == {company["id"], charity["id"], open_line["id"]}
    won = releases[company["id"]]
    assert won["tag"] == ["awardUpdate"] and won["tender"]["status"] == "complete"
    assert won["awards"] == [
        {
            "id": f"{company['id']}-award",
            "status": "active",
            "date": "2026-11-20T00:00:00Z",
            "value": {"amount": 450_000.5, "currency": "GBP"},
            "suppliers": [{"id": "GB-COH-12345678", "name": "Leeds Community Kitchens CIC"}],
        }
    ]
    supplier = next(p for p in won["parties"] if p["roles"] == ["supplier"])
    assert supplier["identifier"] == {"scheme": "GB-COH", "id": "12345678"}
    first = releases[charity["id"]]
    assert first["tag"] == ["award"]
    # A charity number is not a Companies House one: the supplier is named without an identifier.
    [charity_supplier] = [p for p in first["parties"] if p["roles"] == ["supplier"]]
    assert "identifier" not in charity_supplier and charity_supplier["name"] == "Chapeltown Food Trust"
    assert "awards" not in releases[open_line["id"]]
    validator = extended_validator(patch)
    assert [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)] == []


def test_only_a_number_that_must_be_a_company_gets_the_companies_house_scheme() -> None:
    assert ocds.supplier_identifier("12345678") == {"scheme": "GB-COH", "id": "12345678"}
    assert ocds.supplier_identifier("SC123456") == {"scheme": "GB-COH", "id": "SC123456"}
    assert ocds.supplier_identifier("OC301234") == {"scheme": "GB-COH", "id": "OC301234"}
    assert ocds.supplier_identifier("SC012345") is None  # a Scottish charity number looks the same
    assert ocds.supplier_identifier("1123456") is None  # a charity in England and Wales
    assert ocds.supplier_identifier("IP12345R") is None  # a registered society
    assert ocds.supplier_identifier(None) is None
