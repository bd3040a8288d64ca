"""Anchors: registered by staff, readable by everyone signed in."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI

from services.demand.events import AnchorPayload
from services.demand.tests.conftest import (
    INTEGRATOR,
    MENTOR,
    PUBLIC,
    anchor_principal,
    enterprise_principal,
    line_body,
    outbox_events,
)
from shared.testing.apps import STAFF, client

LEEDS = {
    "name": "Leeds City Council",
    "type": "local_authority",
    "identifiers": {"GB-PPON": "pzwx-3512-yqnd", "GB-COH": "SC123456"},
    "annual_third_party_spend_pence": 95_000_000_000,
}


async def test_staff_registers_an_anchor_and_the_event_says_so(app: FastAPI) -> None:
    async with client(app, STAFF) as http:
        response = await http.post("/api/v1/anchors", json=LEEDS)
    assert response.status_code == 201
    anchor = response.json()
    assert anchor["identifiers"] == {"GB-PPON": "PZWX-3512-YQND", "GB-COH": "SC123456"}
    assert response.headers["location"] == f"/api/v1/anchors/{anchor['id']}"
    [event] = await outbox_events(app)
    assert event["type"] == "demand.anchor.registered.v1" and event["subject"] == anchor["id"]
    assert event["data"] == {
        "anchor_id": anchor["id"],
        "version": 1,
        "name": "Leeds City Council",
        "type": "local_authority",
        "identifiers": {"GB-PPON": "PZWX-3512-YQND", "GB-COH": "SC123456"},
    }
    AnchorPayload.model_validate(event["data"])


async def test_only_staff_registers_anchors(app: FastAPI) -> None:
    for principal in (
        anchor_principal(str(uuid.uuid4())),
        enterprise_principal(str(uuid.uuid4())),
        MENTOR,
        INTEGRATOR,
        PUBLIC,
    ):
        async with client(app, principal) as http:
            assert (await http.post("/api/v1/anchors", json=LEEDS)).status_code == 403


async def test_bad_anchor_is_refused_naming_the_field(app: FastAPI) -> None:
    async with client(app, STAFF) as http:
        bad_type = await http.post("/api/v1/anchors", json={**LEEDS, "type": "bank"})
        bad_ppon = await http.post("/api/v1/anchors", json={**LEEDS, "identifiers": {"GB-PPON": "123"}})
        bad_scheme = await http.post("/api/v1/anchors", json={**LEEDS, "identifiers": {"DUNS": "1"}})
        negative = await http.post("/api/v1/anchors", json={**LEEDS, "annual_third_party_spend_pence": -5})
        listed = await http.get("/api/v1/anchors")
    for response, field in (
        (bad_type, "type"),
        (bad_ppon, "identifiers"),
        (bad_scheme, "identifiers"),
        (negative, "annual_third_party_spend_pence"),
    ):
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == [field]
    assert listed.json()["items"] == []


async def test_everyone_signed_in_lists_and_reads_anchors_page_by_page(app: FastAPI, new_anchor) -> None:
    names = [f"Anchor {n}" for n in "EDCBA"]
    for name in names:
        await new_anchor(name=name, type="college" if name.endswith("A") else "police")
    for principal in (
        STAFF,
        anchor_principal(str(uuid.uuid4())),
        enterprise_principal("e"),
        MENTOR,
        INTEGRATOR,
    ):
        async with client(app, principal) as http:
            first = (await http.get("/api/v1/anchors", params={"limit": 3})).json()
            second = (
                await http.get("/api/v1/anchors", params={"limit": 3, "cursor": first["next_cursor"]})
            ).json()
            colleges = (await http.get("/api/v1/anchors", params={"type": "college"})).json()
            one = await http.get(f"/api/v1/anchors/{first['items'][0]['id']}")
        assert [a["name"] for a in first["items"] + second["items"]] == sorted(names)
        assert second["next_cursor"] is None
        assert [a["name"] for a in colleges["items"]] == ["Anchor A"]
        assert one.status_code == 200 and one.headers["etag"] == '"1"'
    async with client(app, PUBLIC) as http:
        assert (await http.get("/api/v1/anchors")).status_code == 403
    async with client(app, STAFF) as http:
        assert (await http.get(f"/api/v1/anchors/{uuid.uuid4()}")).status_code == 404


async def test_staff_changes_an_anchor_with_if_match_and_its_lines_follow_the_new_type(
    app: FastAPI, new_anchor, refresh
) -> None:
    anchor = await new_anchor(type="other")
    async with client(app, anchor_principal(anchor["id"])) as http:
        assert (await http.post("/api/v1/demand", json=line_body())).status_code == 201
        assert (await http.patch(f"/api/v1/anchors/{anchor['id']}", json={"name": "Mine"})).status_code == 403
    async with client(app, STAFF) as http:
        stale = await http.patch(
            f"/api/v1/anchors/{anchor['id']}", json={"type": "fire"}, headers={"If-Match": '"9"'}
        )
        changed = await http.patch(
            f"/api/v1/anchors/{anchor['id']}", json={"type": "fire"}, headers={"If-Match": '"1"'}
        )
        await refresh()
        pipeline = (await http.get("/api/v1/pipeline", params={"group_by": "anchor_type"})).json()
        line = (await http.get("/api/v1/demand")).json()["items"][0]
    assert stale.status_code == 412
    assert changed.status_code == 200 and changed.json()["version"] == 2 and changed.headers["etag"] == '"2"'
    assert [c["key"] for c in pipeline["cells"]] == [{"anchor_type": "fire"}]
    assert line["anchor_type"] == "fire"
    updated = [e for e in await outbox_events(app) if e["type"] == "demand.anchor.updated.v1"]
    assert [(e["data"]["version"], e["data"]["type"]) for e in updated] == [(2, "fire")]


async def test_options_on_an_anchor_lists_every_method_of_its_path(
    staff_http: httpx.AsyncClient, new_anchor
) -> None:
    anchor = await new_anchor()
    async with staff_http as http:
        answer = await http.options(f"/api/v1/anchors/{anchor['id']}")
    assert answer.status_code == 405
    assert {"GET", "PATCH"} <= set(answer.headers["allow"].split(", "))
