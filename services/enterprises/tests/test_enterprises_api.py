"""Enterprises through the API: create, read, list, update, stage changes, history, access."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI

from services.enterprises.tests.conftest import (
    ANCHOR,
    INTEGRATOR,
    MENTOR,
    STAFF_2,
    create_enterprise,
    enterprise_body,
    enterprise_principal,
    outbox_count,
    outbox_events,
)
from shared.testing.apps import client

ENTERPRISES = "/api/v1/enterprises"


async def test_staff_registers_an_enterprise_with_normalised_fields_and_derived_size(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    body = enterprise_body(
        postcode=" ls6  2qr ",
        registration_number="1234567",
        legal_form="company_limited_by_shares",
        cpv_codes=["90910000-9", "90910000", "45000000"],
        employees=30,
        turnover_pence=200_000_000,
    )
    response = await staff.post(ENTERPRISES, json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["postcode"] == "LS6 2QR"
    assert created["registration_number"] == "01234567"
    assert created["cpv_codes"] == ["90910000-9", "45000000"]
    assert created["size_class"] == "small"
    assert created["stage"] == "applicant"
    assert created["version"] == 1
    assert response.headers["etag"] == '"1"'
    assert response.headers["location"] == f"{ENTERPRISES}/{created['id']}"
    fetched = await staff.get(f"{ENTERPRISES}/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


async def test_registration_writes_the_registered_event_and_first_readiness(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    created = await create_enterprise(staff)
    events = await outbox_events(app)
    assert [e["type"] for e in events] == [
        "enterprises.enterprise.registered.v1",
        "enterprises.readiness.changed.v1",
    ]
    registered, readiness = events
    assert registered["subject"] == created["id"]
    assert registered["source"] == "/seedbed/enterprises"
    assert set(registered["data"]) == {
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
    assert registered["data"]["postcode"] == "LS6 2QR"
    assert readiness["data"]["version"] == 1
    assert readiness["data"]["ready"] is False
    assert readiness["data"]["score"] == 0.0
    assert "legal_entity" in readiness["data"]["missing"]


@pytest.mark.parametrize(
    ("field", "value", "message_part"),
    [
        ("postcode", "LS6 2QC", "postcode"),
        ("postcode", "not a postcode", "postcode"),
        ("legal_form", "plc", "company_limited_by_shares"),
        ("cpv_codes", ["12000000"], "division"),
        ("cpv_codes", ["45000000-1"], "check digit"),
        ("cpv_codes", ["4500"], "CPV"),
        ("employees", -1, "greater than or equal"),
        ("turnover_pence", -5, "greater than or equal"),
        ("max_contract_value_pence", 1.5, "integer"),
        ("registration_number", "SC12", "Companies House"),
        ("stage", "graduated", "applicant or incubating"),
        # An id of no cohort; fixed, since every xdist worker must collect the same test ids.
        ("cohort_id", "6f1c2e8a-3b4d-4c5e-9f60-7a8b9c0d1e2f", "no cohort"),
        ("website", "ftp://x", "http"),
        ("unexpected", 1, "Extra inputs"),
    ],
)
async def test_bad_input_is_refused_with_the_field_named_and_nothing_written(
    app: FastAPI, staff: httpx.AsyncClient, field: str, value: object, message_part: str
) -> None:
    response = await staff.post(ENTERPRISES, json=enterprise_body(**{field: value}))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    fields = {e["field"].split(".")[0] for e in problem["errors"]}
    assert field in fields
    assert any(message_part.lower() in e["message"].lower() for e in problem["errors"])
    assert await outbox_count(app) == 0
    listed = await staff.get(ENTERPRISES)
    assert listed.json()["items"] == []


async def test_every_bad_field_is_reported_at_once(staff: httpx.AsyncClient) -> None:
    response = await staff.post(
        ENTERPRISES, json=enterprise_body(postcode="nope", cpv_codes=["99999999"], employees=-3)
    )
    assert response.status_code == 422
    assert {e["field"].split(".")[0] for e in response.json()["errors"]} == {
        "postcode",
        "cpv_codes",
        "employees",
    }


@pytest.mark.parametrize(
    ("legal_form", "number", "stored"),
    [
        ("company_limited_by_shares", "sc123456", "SC123456"),
        ("cio", "NIC100002", "NIC100002"),
        ("cooperative_society", "12345r", "12345R"),
        ("sole_trader", None, None),
    ],
)
async def test_registration_numbers_plausible_for_the_legal_form_are_accepted(  # more in test_identifiers
    staff: httpx.AsyncClient, legal_form: str, number: str | None, stored: str | None
) -> None:
    created = await create_enterprise(staff, legal_form=legal_form, registration_number=number)
    assert created["registration_number"] == stored


@pytest.mark.parametrize(
    ("legal_form", "number"),
    [
        ("charity", "OC123456"),
        ("sole_trader", "01234567"),
    ],
)
async def test_registration_numbers_of_another_register_are_refused(
    staff: httpx.AsyncClient, legal_form: str, number: str
) -> None:
    response = await staff.post(
        ENTERPRISES, json=enterprise_body(legal_form=legal_form, registration_number=number)
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "registration_number"


async def test_the_same_registration_number_cannot_be_registered_twice(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    await create_enterprise(staff, registration_number="01234567")
    before = await outbox_count(app)
    response = await staff.post(ENTERPRISES, json=enterprise_body(registration_number="1234567"))
    assert response.status_code == 409
    assert response.json()["errors"][0]["field"] == "registration_number"
    assert await outbox_count(app) == before


async def test_a_retried_create_with_the_same_idempotency_key_registers_once(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    body = enterprise_body()
    first = await staff.post(ENTERPRISES, json=body, headers={"Idempotency-Key": "create-1"})
    again = await staff.post(ENTERPRISES, json=body, headers={"Idempotency-Key": "create-1"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len((await staff.get(ENTERPRISES)).json()["items"]) == 1
    assert await outbox_count(app) == 2
    other = await staff.post(ENTERPRISES, json=enterprise_body(), headers={"Idempotency-Key": "create-1"})
    assert other.status_code == 422


async def test_listing_pages_through_every_enterprise_once_in_creation_order(
    staff: httpx.AsyncClient,
) -> None:
    ids = [(await create_enterprise(staff, name=f"Enterprise {n}"))["id"] for n in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await staff.get(ENTERPRISES, params=params)).json()
        assert len(page["items"]) <= 3
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


async def test_listing_filters_by_stage_cohort_legal_form_cpv_prefix_and_text(
    staff: httpx.AsyncClient,
) -> None:
    cohort = (
        await staff.post(
            "/api/v1/cohorts",
            json={
                "name": "Spring",
                "programme": "Tender ready",
                "start_date": "2027-01-01",
                "end_date": "2027-06-30",
            },
        )
    ).json()
    caterer = await create_enterprise(
        staff,
        name="Hyde Park Kitchen",
        cpv_codes=["55520000-1"],
        legal_form="cooperative_society",
        registration_number="12345R",
        cohort_id=cohort["id"],
        stage="incubating",
    )
    builder = await create_enterprise(staff, name="Chapeltown Builders", cpv_codes=["45233140-2"])
    cleaner = await create_enterprise(staff, name="Kirkstall Cleaners", cpv_codes=["90910000-9"])

    async def names(**params: str) -> set[str]:
        response = await staff.get(ENTERPRISES, params=params)
        assert response.status_code == 200, response.text
        return {item["name"] for item in response.json()["items"]}

    assert await names(stage="incubating") == {caterer["name"]}
    assert await names(cohort_id=cohort["id"]) == {caterer["name"]}
    assert await names(legal_form="cooperative_society") == {caterer["name"]}
    assert await names(cpv="4523") == {builder["name"]}
    assert await names(q="kirkSTALL") == {cleaner["name"]}
    assert await names(q="%") == set()
    assert await names(stage="applicant", cpv="90") == {cleaner["name"]}
    refused = await staff.get(ENTERPRISES, params={"cpv": "9", "stage": "sleeping"})
    assert refused.status_code == 422
    assert {e["field"] for e in refused.json()["errors"]} == {"cpv", "stage"}


async def test_a_forged_cursor_is_refused(staff: httpx.AsyncClient) -> None:
    response = await staff.get(ENTERPRISES, params={"cursor": "bm90LWEtY3Vyc29y"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "cursor"


async def test_staff_update_needs_the_current_etag_and_returns_the_next(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    created = await create_enterprise(staff)
    url = f"{ENTERPRISES}/{created['id']}"
    updated = await staff.patch(
        url, json={"employees": 60, "name": "Green Clean"}, headers={"If-Match": '"1"'}
    )
    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] == '"2"'
    assert updated.json()["size_class"] == "medium"
    before = await outbox_count(app)
    stale = await staff.patch(url, json={"employees": 4}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.json()["current_etag"] == '"2"'
    assert (await staff.get(url)).json()["employees"] == 60
    assert await outbox_count(app) == before


async def test_an_update_writes_the_updated_event_with_the_new_version(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    created = await create_enterprise(staff)
    await staff.patch(f"{ENTERPRISES}/{created['id']}", json={"cpv_codes": ["72000000-5"]})
    updated = [e for e in await outbox_events(app) if e["type"] == "enterprises.enterprise.updated.v1"]
    assert len(updated) == 1
    assert updated[0]["data"]["version"] == 2
    assert updated[0]["data"]["cpv_codes"] == ["72000000-5"]


async def test_an_update_that_changes_nothing_writes_nothing(app: FastAPI, staff: httpx.AsyncClient) -> None:
    created = await create_enterprise(staff)
    before = await outbox_count(app)
    response = await staff.patch(f"{ENTERPRISES}/{created['id']}", json={"name": created["name"]})
    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert await outbox_count(app) == before


async def test_changing_the_legal_form_rechecks_the_registration_number(staff: httpx.AsyncClient) -> None:
    created = await create_enterprise(
        staff, legal_form="company_limited_by_shares", registration_number="01234567"
    )
    response = await staff.patch(f"{ENTERPRISES}/{created['id']}", json={"legal_form": "charity"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "registration_number"


async def test_required_fields_cannot_be_cleared(staff: httpx.AsyncClient) -> None:
    created = await create_enterprise(staff)
    response = await staff.patch(f"{ENTERPRISES}/{created['id']}", json={"postcode": None, "vcse": None})
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"postcode", "vcse"}


async def test_stage_moves_forward_one_step_at_a_time(app: FastAPI, staff: httpx.AsyncClient) -> None:
    created = await create_enterprise(staff)
    url = f"{ENTERPRISES}/{created['id']}"
    skipped = await staff.patch(url, json={"stage": "graduated"})
    assert skipped.status_code == 409
    assert skipped.json()["allowed"] == ["incubating", "withdrawn"]
    moved = await staff.patch(url, json={"stage": "incubating"})
    assert moved.status_code == 200
    changed = [e for e in await outbox_events(app) if e["type"] == "enterprises.enterprise.stage_changed.v1"]
    assert len(changed) == 1
    assert changed[0]["data"]["from_stage"] == "applicant"
    assert changed[0]["data"]["to_stage"] == "incubating"
    assert changed[0]["data"]["stage"] == "incubating"


async def test_tender_ready_is_refused_while_core_milestones_are_missing(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    created = await create_enterprise(staff, stage="incubating")
    before = await outbox_count(app)
    response = await staff.patch(f"{ENTERPRISES}/{created['id']}", json={"stage": "tender_ready"})
    assert response.status_code == 409
    assert "legal_entity" in response.json()["missing"]
    assert await outbox_count(app) == before


async def test_withdrawn_is_reachable_from_any_stage_and_final(staff: httpx.AsyncClient) -> None:
    created = await create_enterprise(staff)
    url = f"{ENTERPRISES}/{created['id']}"
    assert (await staff.patch(url, json={"stage": "withdrawn"})).status_code == 200
    assert (await staff.patch(url, json={"stage": "applicant"})).status_code == 409


async def test_history_records_who_changed_what_and_when(app: FastAPI, staff: httpx.AsyncClient) -> None:
    created = await create_enterprise(staff)
    url = f"{ENTERPRISES}/{created['id']}"
    async with client(app, enterprise_principal(created["id"])) as own:
        assert (await own.patch(url, json={"employees": 12})).status_code == 200
    await staff.patch(url, json={"stage": "incubating"})
    entries = (await staff.get(f"{url}/history")).json()["items"]
    assert [e["action"] for e in entries] == ["registered", "updated", "stage_changed"]
    update = entries[1]
    assert update["actor"] == {
        "role": "enterprise",
        "actor": f"key-of-{created['id']}",
        "subject_id": created["id"],
    }
    assert update["changes"]["employees"] == {"from": 3, "to": 12}
    assert update["changes"]["size_class"] == {"from": "micro", "to": "small"}
    assert entries[2]["changes"]["stage"] == {"from": "applicant", "to": "incubating"}
    assert entries[2]["actor"]["role"] == "staff"


# --- access (docs/ACCESS.md) -----------------------------------------------------------------


async def test_only_staff_create_and_list_enterprises(app: FastAPI) -> None:
    for principal in (ANCHOR, MENTOR, INTEGRATOR, enterprise_principal(str(uuid.uuid4()))):
        async with client(app, principal) as http:
            assert (await http.post(ENTERPRISES, json=enterprise_body())).status_code == 403
            assert (await http.get(ENTERPRISES)).status_code == 403
    assert await outbox_count(app) == 0


async def test_who_may_read_an_enterprise(app: FastAPI, staff: httpx.AsyncClient) -> None:
    created = await create_enterprise(staff)
    other = await create_enterprise(staff)
    url = f"{ENTERPRISES}/{created['id']}"
    expected = {
        "staff-2": (STAFF_2, 200),
        "mentor": (MENTOR, 200),
        "itself": (enterprise_principal(created["id"]), 200),
        "another enterprise": (enterprise_principal(other["id"]), 404),
        "anchor": (ANCHOR, 404),
        "integrator": (INTEGRATOR, 403),
    }
    for name, (principal, status) in expected.items():
        async with client(app, principal) as http:
            for path in (url, f"{url}/milestones", f"{url}/readiness"):
                assert (await http.get(path)).status_code == status, (name, path)


async def test_who_may_read_the_history(app: FastAPI, staff: httpx.AsyncClient) -> None:
    created = await create_enterprise(staff)
    url = f"{ENTERPRISES}/{created['id']}/history"
    for principal, status in (
        (enterprise_principal(created["id"]), 200),
        (enterprise_principal(str(uuid.uuid4())), 404),
        (ANCHOR, 404),
        (MENTOR, 403),
        (INTEGRATOR, 403),
    ):
        async with client(app, principal) as http:
            assert (await http.get(url)).status_code == status, principal.role


async def test_an_enterprise_edits_its_profile_but_not_its_stage_or_cohort(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    created = await create_enterprise(staff)
    url = f"{ENTERPRISES}/{created['id']}"
    before = await outbox_count(app)
    async with client(app, enterprise_principal(created["id"])) as own:
        assert (await own.patch(url, json={"stage": "incubating"})).status_code == 403
        assert (await own.patch(url, json={"cohort_id": str(uuid.uuid4())})).status_code == 403
        assert await outbox_count(app) == before
        response = await own.patch(url, json={"works_with_public": True, "website": "https://green.example"})
        assert response.status_code == 200
    other = await create_enterprise(staff)
    async with client(app, enterprise_principal(other["id"])) as stranger:
        assert (await stranger.patch(url, json={"name": "Mine now"})).status_code == 404
    for principal, status in ((MENTOR, 403), (INTEGRATOR, 403), (ANCHOR, 404)):
        async with client(app, principal) as http:
            assert (await http.patch(url, json={"name": "x"})).status_code == status
    assert (await staff.get(url)).json()["name"] == created["name"]


async def test_an_unknown_enterprise_is_a_404_problem(staff: httpx.AsyncClient) -> None:
    response = await staff.get(f"{ENTERPRISES}/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
