"""What this service publishes and consumes matches docs/EVENTS.md, and the AsyncAPI document says so."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from services.enterprises.consumers import CONSUMERS
from services.enterprises.events import PUBLISHED

SNAPSHOT = {
    "enterprise_id",
    "version",
    "name",
    "legal_form",
    "stage",
    "cohort_id",
    "postcode",
    "cpv_codes",
    "max_contract_value_pence",
    "employees",
    "turnover_pence",
    "vcse",
    "size_class",
}
MILESTONE = {
    "enterprise_id",
    "code",
    "category",
    "status",
    "version",
    "expires_at",
    "value_pence",
    "actor_role",
    "renewal_pending",
}
READINESS = {"enterprise_id", "version", "score", "ready", "missing", "expiring_soon", "verified"}
DEFINITION = {
    "code",
    "version",
    "name",
    "category",
    "description",
    "applies_when",
    "threshold_pence",
    "validity_days",
    "core",
    "builtin",
}
BID = {
    "bid_id",
    "version",
    "enterprise_id",
    "demand_id",
    "anchor_id",
    "role",
    "partners",
    "status",
    "contract_value_pence",
    "submitted_at",
    "decided_at",
    "award_check",
    "cohort_id",
    "at",
}

EXPECTED = {
    "enterprises.enterprise.registered.v1": SNAPSHOT,
    "enterprises.enterprise.updated.v1": SNAPSHOT,
    "enterprises.enterprise.stage_changed.v1": SNAPSHOT | {"from_stage", "to_stage"},
    "enterprises.milestone.submitted.v1": MILESTONE,
    "enterprises.milestone.verified.v1": MILESTONE,
    "enterprises.milestone.rejected.v1": MILESTONE,
    "enterprises.milestone.expiring.v1": MILESTONE,
    "enterprises.milestone.expired.v1": MILESTONE,
    "enterprises.readiness.changed.v1": READINESS,
    "enterprises.milestone_definition.published.v1": DEFINITION,
    "enterprises.bid.changed.v1": BID,
}


def test_published_payloads_carry_exactly_the_documented_fields() -> None:
    assert {spec.type: set(spec.payload.model_fields) for spec in PUBLISHED} == EXPECTED


def test_the_readiness_payload_lists_each_verified_milestone_with_expiry_and_value() -> None:
    spec = next(s for s in PUBLISHED if s.type == "enterprises.readiness.changed.v1")
    schema = spec.payload.model_json_schema()
    item = schema["$defs"][schema["properties"]["verified"]["items"]["$ref"].split("/")[-1]]
    assert set(item["properties"]) == {"code", "expires_at", "value_pence"}


def test_consumers_read_the_documented_streams_under_their_durable_names() -> None:
    assert {(c.durable, c.stream, tuple(c.subjects)) for c in CONSUMERS} == {
        ("enterprises-demand", "DEMAND", ("demand.item.>",)),
        ("enterprises-mentoring", "MENTORING", ("mentoring.session.completed.v1",)),
    }


async def test_the_asyncapi_document_describes_every_published_event(
    staff: httpx.AsyncClient, app: FastAPI
) -> None:
    document = (await staff.get("/asyncapi.json")).json()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == set(EXPECTED)
    readiness = document["components"]["schemas"]["enterprises_readiness_changed_v1_data"]
    assert set(readiness["properties"]) == READINESS


async def test_the_openapi_document_serves_the_public_paths_of_api_md(staff: httpx.AsyncClient) -> None:
    document = (await staff.get("/openapi.json")).json()
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert {
        ("POST", "/api/v1/enterprises"),
        ("GET", "/api/v1/enterprises"),
        ("GET", "/api/v1/enterprises/{enterprise_id}"),
        ("PATCH", "/api/v1/enterprises/{enterprise_id}"),
        ("GET", "/api/v1/enterprises/{enterprise_id}/history"),
        ("POST", "/api/v1/cohorts"),
        ("GET", "/api/v1/cohorts"),
        ("GET", "/api/v1/milestone-definitions"),
        ("POST", "/api/v1/milestone-definitions"),
        ("GET", "/api/v1/enterprises/{enterprise_id}/milestones"),
        ("PATCH", "/api/v1/enterprises/{enterprise_id}/milestones/{code}"),
        ("GET", "/api/v1/enterprises/{enterprise_id}/readiness"),
        ("POST", "/api/v1/enterprises/{enterprise_id}/bids"),
        ("GET", "/api/v1/enterprises/{enterprise_id}/bids"),
        ("GET", "/api/v1/bids"),
        ("GET", "/api/v1/bids/{bid_id}"),
        ("PATCH", "/api/v1/bids/{bid_id}"),
        ("GET", "/api/v1/bids/{bid_id}/history"),
    } <= operations
    assert all(path.startswith("/api/v1/") or path in ("/healthz", "/readyz") for _, path in operations)
