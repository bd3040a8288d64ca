"""Bids through the API: recording one against a public line, moving it to an outcome, its
history, the lists, and who may see and change what."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.enterprises.tests.conftest import (
    ANCHOR,
    INTEGRATOR,
    MENTOR,
    STAFF_2,
    award,
    create_bid,
    create_enterprise,
    deliver,
    enterprise_principal,
    outbox_events,
    public_line,
)
from services.enterprises.tests.test_events_contract import BID
from shared.principal import Principal
from shared.testing.apps import client

BID_EVENT = "enterprises.bid.changed.v1"


def anchor_principal(anchor_id: str) -> Principal:
    return Principal(role="anchor", subject_id=anchor_id, actor=f"key-of-{anchor_id}")


async def known_line(app: FastAPI, **overrides: Any) -> dict[str, Any]:
    """A public line the service has heard of (its published event handled)."""
    line = public_line(str(uuid.uuid4()), **overrides)
    await deliver(app, "demand.item.published.v1", line)
    return line


async def bid_events(app: FastAPI) -> list[dict[str, Any]]:
    return [e for e in await outbox_events(app) if e["type"] == BID_EVENT]


async def test_an_enterprise_records_its_bid_and_sees_its_gaps_against_the_line(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    line = await known_line(app)
    async with client(app, enterprise_principal(eid)) as own:
        response = await own.post(
            f"/api/v1/enterprises/{eid}/bids",
            json={"demand_id": line["demand_id"], "role": "subcontractor", "partners": [" Leeds Meals Ltd "]},
        )
    assert response.status_code == 201, response.text
    bid = response.json()
    assert response.headers["Location"] == f"/api/v1/bids/{bid['id']}"
    assert response.headers["ETag"] == '"1"'
    assert bid | {"id": None, "created_at": None, "updated_at": None} == {
        "id": None,
        "enterprise_id": eid,
        "demand_id": line["demand_id"],
        "anchor_id": line["anchor_id"],
        "role": "subcontractor",
        "partners": ["Leeds Meals Ltd"],
        "status": "intended",
        "contract_value_pence": None,
        "submitted_at": None,
        "decided_at": None,
        "award_check": None,
        "note": None,
        "version": 1,
        "created_at": None,
        "updated_at": None,
        # Not ready for the line: bidding is allowed, and the gaps are shown.
        "ready": False,
        "open_gaps": [
            {
                "code": "public_liability_insurance",
                "reason": "not_started",
                "required_value_pence": 500_000_000,
                "value_pence": None,
            }
        ],
    }


async def test_every_bid_change_sends_the_bid_event_with_the_whole_bid(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    cohort = (
        await staff.post(
            "/api/v1/cohorts",
            json={
                "name": "Spring",
                "programme": "Tender ready",
                "start_date": "2027-01-11",
                "end_date": "2027-06-30",
            },
        )
    ).json()
    enterprise = await create_enterprise(staff, cohort_id=cohort["id"])
    line = await known_line(app)
    bid = await create_bid(staff, enterprise["id"], line["demand_id"], status="submitted")
    await staff.patch(f"/api/v1/bids/{bid['id']}", json={"status": "won", "contract_value_pence": 45_000_000})
    events = await bid_events(app)
    assert [e["data"]["version"] for e in events] == [1, 2]
    assert all(set(e["data"]) == BID and e["subject"] == bid["id"] for e in events)
    won = events[1]["data"]
    assert won | {"at": None, "submitted_at": None, "decided_at": None} == {
        "bid_id": bid["id"],
        "version": 2,
        "enterprise_id": enterprise["id"],
        "demand_id": line["demand_id"],
        "anchor_id": line["anchor_id"],
        "role": "lead",
        "partners": [],
        "status": "won",
        "contract_value_pence": 45_000_000,
        "submitted_at": None,
        "decided_at": None,
        "award_check": None,
        "cohort_id": cohort["id"],
        "at": None,
    }
    assert won["submitted_at"] == events[0]["data"]["submitted_at"] is not None
    assert won["decided_at"] == won["at"]


async def test_a_consortium_or_subcontract_bid_names_its_partners(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    line = await known_line(app)
    url = f"/api/v1/enterprises/{enterprise['id']}/bids"
    for body, field in [
        ({"role": "consortium_member"}, "partners"),
        ({"role": "subcontractor", "partners": []}, "partners"),
        ({"partners": [""]}, "partners.0"),
        ({"partners": ["x" * 201]}, "partners.0"),
        ({"partners": [f"Partner {i}" for i in range(21)]}, "partners"),
        ({"status": "won"}, "status"),
        ({"role": "prime"}, "role"),
    ]:
        response = await staff.post(url, json={"demand_id": line["demand_id"], **body})
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in response.json()["errors"]], (body, response.json())
    assert await bid_events(app) == []


async def test_a_bid_needs_a_public_line_known_here_that_is_not_withdrawn(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    line = await known_line(app)
    await deliver(
        app,
        "demand.item.withdrawn.v1",
        {
            "demand_id": line["demand_id"],
            "version": 2,
            "anchor_id": line["anchor_id"],
            "status": "withdrawn",
            "reason": "budget",
        },
    )
    url = f"/api/v1/enterprises/{enterprise['id']}/bids"
    for demand_id in (line["demand_id"], str(uuid.uuid4())):
        response = await staff.post(url, json={"demand_id": demand_id})
        assert response.status_code == 404, response.text
        assert response.json()["errors"][0]["field"] == "demand_id"
    unknown = await staff.post(
        f"/api/v1/enterprises/{uuid.uuid4()}/bids", json={"demand_id": line["demand_id"]}
    )
    assert unknown.status_code == 404


async def test_a_second_bid_on_the_same_line_is_a_conflict_naming_the_first(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    line = await known_line(app)
    first = await create_bid(staff, enterprise["id"], line["demand_id"])
    async with client(app, enterprise_principal(enterprise["id"])) as own:
        again = await own.post(
            f"/api/v1/enterprises/{enterprise['id']}/bids",
            json={"demand_id": line["demand_id"], "status": "submitted"},
        )
    assert again.status_code == 409, again.text
    assert again.json()["bid_id"] == first["id"]
    assert again.json()["errors"][0]["field"] == "demand_id"
    # Another enterprise may bid on the same line.
    other = await create_enterprise(staff)
    await create_bid(staff, other["id"], line["demand_id"])


async def test_a_retried_create_with_the_same_idempotency_key_records_one_bid(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    line = await known_line(app)
    url = f"/api/v1/enterprises/{enterprise['id']}/bids"
    body = {"demand_id": line["demand_id"], "status": "submitted"}
    first = await staff.post(url, json=body, headers={"Idempotency-Key": "bid-1"})
    again = await staff.post(url, json=body, headers={"Idempotency-Key": "bid-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(await bid_events(app)) == 1
    changed = await staff.post(url, json=body | {"note": "other"}, headers={"Idempotency-Key": "bid-1"})
    assert changed.status_code == 422


async def test_a_bid_moves_to_an_outcome_with_etags_and_its_rules(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    line = await known_line(app)
    bid = await create_bid(staff, enterprise["id"], line["demand_id"])
    url = f"/api/v1/bids/{bid['id']}"
    async with client(app, enterprise_principal(enterprise["id"])) as own:
        early = await own.patch(url, json={"status": "won", "contract_value_pence": 1})
        assert early.status_code == 409
        assert early.json()["allowed"] == ["submitted", "withdrawn"]
        assert early.json()["errors"][0]["field"] == "status"

        submitted = await own.patch(url, json={"status": "submitted"}, headers={"If-Match": '"1"'})
        assert submitted.status_code == 200, submitted.text
        assert submitted.headers["ETag"] == '"2"'
        assert submitted.json()["submitted_at"] is not None
        stale = await own.patch(url, json={"note": "late"}, headers={"If-Match": '"1"'})
        assert stale.status_code == 412

        no_value = await own.patch(url, json={"status": "won"})
        assert no_value.status_code == 422
        assert no_value.json()["errors"][0]["field"] == "contract_value_pence"
        value_not_won = await own.patch(url, json={"contract_value_pence": 10})
        assert value_not_won.status_code == 422

        won = await own.patch(
            url, json={"status": "won", "contract_value_pence": 45_000_000, "note": "Signed"}
        )
        assert won.status_code == 200, won.text
        assert won.json() | {"decided_at": None} == won.json() | {
            "decided_at": None,
            "status": "won",
            "version": 3,
        }
        assert won.json()["decided_at"] is not None
        corrected_value = await own.patch(url, json={"contract_value_pence": 44_000_000})
        assert corrected_value.json()["contract_value_pence"] == 44_000_000

        # The outcome is final for the enterprise; staff may correct it.
        final = await own.patch(url, json={"status": "lost"})
        assert final.status_code == 409
        assert final.json()["allowed"] == []
    lost = await staff.patch(url, json={"status": "lost", "note": "The council awarded it elsewhere"})
    assert lost.status_code == 200, lost.text
    assert lost.json()["contract_value_pence"] is None
    assert (await staff.patch(url, json={"status": "withdrawn"})).json()["allowed"] == ["won"]
    # A PATCH that changes nothing makes no version.
    same = await staff.patch(url, json={"status": "lost"})
    assert same.json()["version"] == lost.json()["version"]
    assert len(await bid_events(app)) == lost.json()["version"]
    assert (await staff.patch(url, json={"role": None})).status_code == 422


async def test_the_history_holds_every_version_and_who_made_it(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    line = await known_line(app)
    async with client(app, enterprise_principal(eid)) as own:
        bid = await create_bid(own, eid, line["demand_id"], note="Going for it")
        await own.patch(f"/api/v1/bids/{bid['id']}", json={"status": "submitted"})
    await staff.patch(
        f"/api/v1/bids/{bid['id']}", json={"role": "consortium_member", "partners": ["Leeds Meals Ltd"]}
    )
    history = (await staff.get(f"/api/v1/bids/{bid['id']}/history", params={"limit": 2})).json()
    assert [(h["version"], h["status"], h["role"], h["actor"]["role"]) for h in history["items"]] == [
        (1, "intended", "lead", "enterprise"),
        (2, "submitted", "lead", "enterprise"),
    ]
    assert history["items"][0]["note"] == "Going for it"
    assert history["items"][0]["actor"]["subject_id"] == eid
    rest = (
        await staff.get(f"/api/v1/bids/{bid['id']}/history", params={"cursor": history["next_cursor"]})
    ).json()
    assert [(h["version"], h["partners"], h["actor"]["role"]) for h in rest["items"]] == [
        (3, ["Leeds Meals Ltd"], "staff")
    ]
    assert rest["next_cursor"] is None


async def test_lists_page_in_creation_order_and_filter(app: FastAPI, staff: httpx.AsyncClient) -> None:
    first, second = await create_enterprise(staff), await create_enterprise(staff)
    lines = [await known_line(app) for _ in range(3)]
    made = [await create_bid(staff, first["id"], line["demand_id"]) for line in lines]
    await staff.patch(f"/api/v1/bids/{made[1]['id']}", json={"status": "submitted"})
    theirs = await create_bid(staff, second["id"], lines[0]["demand_id"])

    url = f"/api/v1/enterprises/{first['id']}/bids"
    page = (await staff.get(url, params={"limit": 2})).json()
    rest = (await staff.get(url, params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [b["id"] for b in page["items"] + rest["items"]] == [b["id"] for b in made]
    assert rest["next_cursor"] is None
    submitted = (await staff.get(url, params={"status": "submitted"})).json()["items"]
    assert [b["id"] for b in submitted] == [made[1]["id"]]

    on_line = (await staff.get("/api/v1/bids", params={"demand_id": lines[0]["demand_id"]})).json()["items"]
    assert [b["id"] for b in on_line] == [made[0]["id"], theirs["id"]]
    everything = (await staff.get("/api/v1/bids", params={"limit": 500})).json()["items"]
    assert len(everything) == 4
    async with client(app, enterprise_principal(second["id"])) as own:
        mine = (await own.get("/api/v1/bids")).json()["items"]
        assert [b["id"] for b in mine] == [theirs["id"]]
        asked_for_another = await own.get("/api/v1/bids", params={"enterprise_id": first["id"]})
        assert asked_for_another.json()["items"] == []
    bad = await staff.get("/api/v1/bids", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "cursor"
    assert (await staff.get(f"/api/v1/enterprises/{uuid.uuid4()}/bids")).status_code == 404


@pytest.mark.parametrize(
    ("principal", "status"),
    [
        (enterprise_principal(str(uuid.uuid4())), 404),
        (ANCHOR, 404),
        (MENTOR, 403),
        (INTEGRATOR, 403),
    ],
)
async def test_only_the_enterprise_and_staff_record_and_list_its_bids(
    app: FastAPI, staff: httpx.AsyncClient, principal: Principal, status: int
) -> None:
    enterprise = await create_enterprise(staff)
    line = await known_line(app)
    url = f"/api/v1/enterprises/{enterprise['id']}/bids"
    async with client(app, principal) as other:
        assert (await other.post(url, json={"demand_id": line["demand_id"]})).status_code == status
        assert (await other.get(url)).status_code == status
    async with client(app, STAFF_2) as second_staff:
        assert (await second_staff.get(url)).status_code == 200


async def test_another_enterprise_cannot_see_or_change_a_bid(app: FastAPI, staff: httpx.AsyncClient) -> None:
    enterprise, other = await create_enterprise(staff), await create_enterprise(staff)
    line = await known_line(app)
    bid = await create_bid(staff, enterprise["id"], line["demand_id"])
    url = f"/api/v1/bids/{bid['id']}"
    async with client(app, enterprise_principal(other["id"])) as them:
        assert (await them.get(url)).status_code == 404
        assert (await them.get(f"{url}/history")).status_code == 404
        assert (await them.patch(url, json={"status": "withdrawn"})).status_code == 404
    for principal in (MENTOR, INTEGRATOR):
        async with client(app, principal) as outsider:
            assert (await outsider.get(url)).status_code == 403
            assert (await outsider.get("/api/v1/bids")).status_code == 403
    assert (await staff.get(url)).json()["status"] == "intended"
    assert (await staff.get(f"/api/v1/bids/{uuid.uuid4()}")).status_code == 404


async def test_the_anchor_of_the_line_sees_its_bids_once_the_award_is_known(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    line = await known_line(app)
    elsewhere = await known_line(app)
    bid = await create_bid(staff, enterprise["id"], line["demand_id"], status="submitted")
    await create_bid(staff, enterprise["id"], elsewhere["demand_id"], status="submitted")
    url = f"/api/v1/bids/{bid['id']}"
    anchor = anchor_principal(line["anchor_id"])
    async with client(app, anchor) as own_anchor:
        assert (await own_anchor.get(url)).status_code == 404
        assert (await own_anchor.get(f"{url}/history")).status_code == 404
        assert (await own_anchor.get("/api/v1/bids")).json()["items"] == []

    await deliver(
        app,
        "demand.item.awarded.v1",
        award(line["demand_id"], 2, anchor_id=line["anchor_id"], enterprise_id=enterprise["id"]),
    )
    async with client(app, anchor) as own_anchor:
        seen = await own_anchor.get(url)
        assert seen.status_code == 200, seen.text
        assert seen.json()["award_check"] == "awaiting_outcome"
        assert (await own_anchor.get(f"{url}/history")).status_code == 200
        listed = (await own_anchor.get("/api/v1/bids")).json()["items"]
        assert [b["id"] for b in listed] == [bid["id"]]
        assert (
            await own_anchor.patch(url, json={"status": "won", "contract_value_pence": 1})
        ).status_code == 403
        assert (await own_anchor.get(f"/api/v1/enterprises/{enterprise['id']}/bids")).status_code == 404
    async with client(app, ANCHOR) as another_anchor:
        assert (await another_anchor.get(url)).status_code == 404
        assert (await another_anchor.get("/api/v1/bids")).json()["items"] == []
