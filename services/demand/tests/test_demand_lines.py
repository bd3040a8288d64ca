"""Demand lines through the API: validation, ownership, confidentiality, history and events."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI

from services.demand.events import DemandItemPayload, DemandWithdrawnPayload
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

ITEM_FIELDS = {
    "demand_id", "version", "anchor_id", "anchor_type", "title", "description", "cpv_codes",
    "estimated_value_pence", "min_value_pence", "max_value_pence", "category", "expected_tender_date",
    "contract_start", "duration_months", "lots", "suitable_for_sme", "suitable_for_vcse", "status",
    "requirements", "social_value_priorities", "delivery_area", "external_ref",
}  # fmt: skip


async def post_line(app: FastAPI, anchor_id: str, **overrides: Any) -> dict[str, Any]:
    async with client(app, anchor_principal(anchor_id)) as http:
        response = await http.post("/api/v1/demand", json=line_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


def errors_by_field(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return {e["field"]: e["message"] for e in response.json()["errors"]}


async def test_anchor_posts_a_line_for_itself_and_reads_it_back(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor(type="nhs_trust")
    async with client(app, anchor_principal(anchor["id"])) as http:
        created = await http.post("/api/v1/demand", json=line_body(external_ref="NHS-1"))
        assert created.status_code == 201
        line = created.json()
        assert created.headers["location"] == f"/api/v1/demand/{line['id']}"
        assert created.headers["etag"] == '"1"'
        fetched = await http.get(f"/api/v1/demand/{line['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == {**line, "award": None}  # one line is shown with its award
    assert line["anchor_id"] == anchor["id"] and line["anchor_type"] == "nhs_trust"
    assert line["status"] == "planned" and line["visibility"] == "public"
    assert line["delivery_area"] == {"label": "Leeds", "postcode_areas": ["LS"], "postcode_districts": []}


async def test_staff_posts_for_a_named_anchor_and_must_name_one(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    async with client(app, STAFF) as http:
        missing = await http.post("/api/v1/demand", json=line_body())
        unknown = await http.post("/api/v1/demand", json=line_body(anchor_id=str(uuid.uuid4())))
        created = await http.post("/api/v1/demand", json=line_body(anchor_id=anchor["id"]))
    assert "anchor_id" in errors_by_field(missing)
    assert "anchor_id" in errors_by_field(unknown)
    assert created.status_code == 201 and created.json()["anchor_id"] == anchor["id"]


async def test_anchor_cannot_post_demand_for_another_anchor_and_others_cannot_post(
    app: FastAPI, new_anchor
) -> None:
    mine, theirs = await new_anchor(), await new_anchor()
    async with client(app, anchor_principal(mine["id"])) as http:
        response = await http.post("/api/v1/demand", json=line_body(anchor_id=theirs["id"]))
    assert response.status_code == 403
    for principal in (enterprise_principal(str(uuid.uuid4())), MENTOR, INTEGRATOR, PUBLIC):
        async with client(app, principal) as http:
            assert (await http.post("/api/v1/demand", json=line_body())).status_code == 403


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cpv_codes": ["5552000"]}, "cpv_codes"),
        ({"cpv_codes": ["01000000"]}, "cpv_codes"),  # no such division
        ({"cpv_codes": []}, "cpv_codes"),
        ({"cpv_codes": ["55520000", "55520000"]}, "cpv_codes"),
        ({"estimated_value_pence": -1}, "estimated_value_pence"),
        ({"min_value_pence": 60_000_000, "max_value_pence": 50_000_000}, "min_value_pence"),
        ({"min_value_pence": 50_000_000}, "estimated_value_pence"),  # estimate below the minimum
        ({"expected_tender_date": "2027-07-01", "contract_start": "2027-06-01"}, "expected_tender_date"),
        ({"duration_months": 0}, "duration_months"),
        ({"duration_months": 241}, "duration_months"),
        (
            {"lots": [{"title": "Big lot", "estimated_value_pence": 48_000_001}]},
            "lots.0.estimated_value_pence",
        ),
        (
            {
                "lots": [
                    {"lot_id": "A", "title": "a", "estimated_value_pence": 1},
                    {"lot_id": "A", "title": "b", "estimated_value_pence": 2},
                ]
            },
            "lots.1.lot_id",
        ),
        ({"category": "stuff"}, "category"),
        ({"status": "awarded"}, "status"),
        ({"visibility": "secret"}, "visibility"),
        ({"requirements": [{"code": "Not A Code"}]}, "requirements.0.code"),
        ({"delivery_area": {"label": "Leeds", "postcode_areas": ["L5S"]}}, "delivery_area.postcode_areas"),
        ({"title": ""}, "title"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_line_is_refused_naming_the_field_and_nothing_is_written(
    app: FastAPI, new_anchor, overrides: dict[str, Any], field: str
) -> None:
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        response = await http.post("/api/v1/demand", json=line_body(**overrides))
        listed = await http.get("/api/v1/demand")
    assert field in errors_by_field(response), response.json()
    assert listed.json()["items"] == []
    assert [e for e in await outbox_events(app) if e["type"].startswith("demand.item")] == []


async def test_external_ref_is_unique_per_anchor(app: FastAPI, new_anchor) -> None:
    one, two = await new_anchor(), await new_anchor()
    await post_line(app, one["id"], external_ref="REF-1")
    await post_line(app, two["id"], external_ref="REF-1")  # another anchor may use the same reference
    async with client(app, anchor_principal(one["id"])) as http:
        again = await http.post("/api/v1/demand", json=line_body(external_ref="REF-1"))
    assert again.status_code == 409
    assert again.json()["errors"][0]["field"] == "external_ref"


async def test_idempotency_key_replays_the_first_answer(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        first = await http.post("/api/v1/demand", json=line_body(), headers={"Idempotency-Key": "k1"})
        second = await http.post("/api/v1/demand", json=line_body(), headers={"Idempotency-Key": "k1"})
        listed = await http.get("/api/v1/demand")
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert len(listed.json()["items"]) == 1


async def test_aggregate_only_and_draft_lines_are_hidden_from_everyone_but_their_anchor_and_staff(
    app: FastAPI, new_anchor
) -> None:
    owner, other = await new_anchor(), await new_anchor()
    public = await post_line(app, owner["id"])
    hidden = await post_line(app, owner["id"], visibility="aggregate_only")
    draft = await post_line(app, owner["id"], status="draft")
    outsiders = [anchor_principal(other["id"]), enterprise_principal(str(uuid.uuid4())), MENTOR, INTEGRATOR]
    for principal in outsiders:
        async with client(app, principal) as http:
            assert (await http.get(f"/api/v1/demand/{public['id']}")).status_code == 200
            for line in (hidden, draft):
                response = await http.get(f"/api/v1/demand/{line['id']}")
                assert response.status_code == 404, principal.role
            listed = await http.get("/api/v1/demand", params={"limit": 500})
            assert [i["id"] for i in listed.json()["items"]] == [public["id"]]
            exported = await http.get("/api/v1/demand/ocds")
            assert hidden["id"] not in exported.text and draft["id"] not in exported.text
    for principal in (anchor_principal(owner["id"]), STAFF):
        async with client(app, principal) as http:
            listed = await http.get("/api/v1/demand")
            assert {i["id"] for i in listed.json()["items"]} == {public["id"], hidden["id"], draft["id"]}
            assert (await http.get(f"/api/v1/demand/{hidden['id']}")).status_code == 200
    async with client(app, PUBLIC) as http:
        assert (await http.get(f"/api/v1/demand/{public['id']}")).status_code == 403


async def test_anchor_cannot_edit_another_anchors_demand(app: FastAPI, new_anchor) -> None:
    owner, other = await new_anchor(), await new_anchor()
    public = await post_line(app, owner["id"])
    hidden = await post_line(app, owner["id"], visibility="aggregate_only")
    for principal in (
        anchor_principal(other["id"]),
        enterprise_principal(str(uuid.uuid4())),
        MENTOR,
        INTEGRATOR,
    ):
        async with client(app, principal) as http:
            visible = await http.patch(f"/api/v1/demand/{public['id']}", json={"title": "Mine now"})
            secret = await http.patch(f"/api/v1/demand/{hidden['id']}", json={"title": "Mine now"})
            history = await http.get(f"/api/v1/demand/{public['id']}/history")
            hidden_history = await http.get(f"/api/v1/demand/{hidden['id']}/history")
        assert visible.status_code == 403, principal.role  # it may know the line exists
        assert secret.status_code == 404, principal.role  # it must not learn that this one does
        assert history.status_code == 403 and hidden_history.status_code == 404
    async with client(app, STAFF) as http:
        line = (await http.get(f"/api/v1/demand/{public['id']}")).json()
    assert line["title"] == public["title"] and line["version"] == 1


async def test_update_keeps_every_previous_version_readable(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"])
    async with client(app, anchor_principal(anchor["id"])) as http:
        first = await http.patch(
            f"/api/v1/demand/{line['id']}",
            json={"title": "Catering, four centres"},
            headers={"If-Match": '"1"'},
        )
        assert first.status_code == 200 and first.headers["etag"] == '"2"'
        second = await http.patch(
            f"/api/v1/demand/{line['id']}",
            json={"estimated_value_pence": 50_000_000, "description": None},
            headers={"If-Match": '"2"'},
        )
        assert second.status_code == 422  # description cannot be null
        second = await http.patch(f"/api/v1/demand/{line['id']}", json={"estimated_value_pence": 50_000_000})
        history = (await http.get(f"/api/v1/demand/{line['id']}/history")).json()["items"]
    assert second.json()["version"] == 3
    assert [v["version"] for v in history] == [3, 2, 1]
    assert [v["change"] for v in history] == ["updated", "updated", "created"]
    assert history[0]["changed_fields"] == ["estimated_value_pence"]
    assert history[1]["changed_fields"] == ["title"]
    assert history[2]["line"]["title"] == line["title"]
    assert history[1]["line"]["title"] == "Catering, four centres"
    assert history[0]["actor"] == f"key-{anchor['id'][:8]}" and history[0]["actor_role"] == "anchor"


async def test_stale_if_match_is_refused_and_changes_nothing(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"])
    async with client(app, anchor_principal(anchor["id"])) as http:
        await http.patch(f"/api/v1/demand/{line['id']}", json={"title": "First editor"})
        stale = await http.patch(
            f"/api/v1/demand/{line['id']}", json={"title": "Second editor"}, headers={"If-Match": '"1"'}
        )
        current = (await http.get(f"/api/v1/demand/{line['id']}")).json()
    assert stale.status_code == 412
    assert current["title"] == "First editor" and current["version"] == 2


async def test_patch_that_changes_nothing_makes_no_new_version(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"])
    async with client(app, anchor_principal(anchor["id"])) as http:
        same = await http.patch(f"/api/v1/demand/{line['id']}", json={"title": line["title"]})
        history = (await http.get(f"/api/v1/demand/{line['id']}/history")).json()["items"]
    assert same.status_code == 200 and same.json()["version"] == 1
    assert len(history) == 1


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (["planned", "tendering", "awarded"], True),
        (["draft", "planned"], True),
        (["planned", "withdrawn"], True),
        (["tendering", "cancelled"], True),
        (["planned", "awarded"], False),
        (["tendering", "planned"], False),
        (["planned", "draft"], False),
    ],
)
async def test_status_moves_only_along_the_lifecycle(
    app: FastAPI, new_anchor, path: list[str], allowed: bool
) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"], status=path[0])
    async with client(app, anchor_principal(anchor["id"])) as http:
        for status in path[1:-1]:
            assert (
                await http.patch(f"/api/v1/demand/{line['id']}", json={"status": status})
            ).status_code == 200
        last = await http.patch(f"/api/v1/demand/{line['id']}", json={"status": path[-1]})
    if allowed:
        assert last.status_code == 200 and last.json()["status"] == path[-1]
    else:
        assert "status" in errors_by_field(last)


async def test_cancelled_line_can_no_longer_change(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post_line(app, anchor["id"])
    async with client(app, anchor_principal(anchor["id"])) as http:
        await http.patch(
            f"/api/v1/demand/{line['id']}", json={"status": "cancelled", "status_reason": "budget cut"}
        )
        again = await http.patch(f"/api/v1/demand/{line['id']}", json={"title": "Revived"})
    assert again.status_code == 409


async def test_public_changes_are_published_as_events_and_aggregate_only_ones_never(
    app: FastAPI, new_anchor
) -> None:
    anchor = await new_anchor(type="university")
    public = await post_line(app, anchor["id"], external_ref="U-1")
    secret = await post_line(app, anchor["id"], visibility="aggregate_only", external_ref="U-2")
    draft = await post_line(app, anchor["id"], status="draft", external_ref="U-3")
    async with client(app, anchor_principal(anchor["id"])) as http:
        await http.patch(f"/api/v1/demand/{public['id']}", json={"title": "Renamed"})
        await http.patch(f"/api/v1/demand/{secret['id']}", json={"title": "Renamed secret"})
        await http.patch(f"/api/v1/demand/{draft['id']}", json={"status": "planned"})  # now public
        await http.patch(f"/api/v1/demand/{public['id']}", json={"visibility": "aggregate_only"})
        await http.patch(
            f"/api/v1/demand/{draft['id']}", json={"status": "withdrawn", "status_reason": "merged"}
        )
    items = [e for e in await outbox_events(app) if e["type"].startswith("demand.item")]
    assert [(e["type"], e["subject"], e["data"]["version"]) for e in items] == [
        ("demand.item.published.v1", public["id"], 1),
        ("demand.item.updated.v1", public["id"], 2),
        ("demand.item.published.v1", draft["id"], 2),
        ("demand.item.withdrawn.v1", public["id"], 3),
        ("demand.item.withdrawn.v1", draft["id"], 3),
    ]
    assert all(secret["id"] not in str(e) for e in await outbox_events(app))
    published = items[0]["data"]
    assert set(published) == ITEM_FIELDS
    DemandItemPayload.model_validate(published)
    assert published["anchor_type"] == "university" and published["external_ref"] == "U-1"
    assert items[3]["data"] == {
        "demand_id": public["id"],
        "version": 3,
        "anchor_id": anchor["id"],
        "status": "planned",
        "reason": "the line is now shared in aggregate only",
    }
    DemandWithdrawnPayload.model_validate(items[4]["data"])
    assert items[4]["data"]["status"] == "withdrawn" and items[4]["data"]["reason"] == "merged"


async def test_list_filters_and_cursor_pagination(app: FastAPI, new_anchor) -> None:
    one, two = await new_anchor(), await new_anchor()
    for i in range(5):
        await post_line(app, one["id"], cpv_codes=["55520000"], expected_tender_date=f"2027-0{i + 1}-01")
    await post_line(
        app,
        two["id"],
        cpv_codes=["45000000"],
        category="works",
        status="tendering",
        expected_tender_date="2026-12-01",
    )
    await post_line(app, two["id"], cpv_codes=["79410000"], expected_tender_date="2027-05-01", lots=[
        {"title": "Catering advice", "estimated_value_pence": 1000, "cpv_codes": ["55510000"]}
    ])  # fmt: skip
    async with client(app, INTEGRATOR) as http:
        pages, cursor = [], None
        while True:
            page = (
                await http.get(
                    "/api/v1/demand", params={"limit": 3, **({"cursor": cursor} if cursor else {})}
                )
            ).json()
            pages.append(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        by_cpv = (await http.get("/api/v1/demand", params={"cpv": "555"})).json()["items"]
        works = (await http.get("/api/v1/demand", params={"cpv": "45", "status": "tendering"})).json()[
            "items"
        ]
        by_anchor = (await http.get("/api/v1/demand", params={"anchor_id": two["id"]})).json()["items"]
        by_date = (
            await http.get("/api/v1/demand", params={"from": "2027-02-01", "to": "2027-03-31"})
        ).json()["items"]
        bad = await http.get("/api/v1/demand", params={"status": "lost", "cursor": "nonsense"})
    assert [len(p) for p in pages] == [3, 3, 1]
    assert len({i["id"] for p in pages for i in p}) == 7
    assert len(by_cpv) == 6  # five lines in 555, and one with a lot in 555
    assert [i["category"] for i in works] == ["works"]
    assert {i["anchor_id"] for i in by_anchor} == {two["id"]} and len(by_anchor) == 2
    assert sorted(i["expected_tender_date"] for i in by_date) == ["2027-02-01", "2027-03-01"]
    assert bad.status_code == 422


async def test_lots_are_numbered_and_kept(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post_line(
        app,
        anchor["id"],
        lots=[
            {"title": "North", "estimated_value_pence": 20_000_000, "cpv_codes": ["55520000"]},
            {"lot_id": "1", "title": "South", "estimated_value_pence": 28_000_000},
        ],
    )
    assert [lot["lot_id"] for lot in line["lots"]] == ["2", "1"]


async def test_two_editors_with_the_same_etag_cannot_both_win(app: FastAPI, new_anchor) -> None:
    import asyncio

    anchor = await new_anchor()
    line = await post_line(app, anchor["id"])

    async def edit(title: str) -> int:
        async with client(app, anchor_principal(anchor["id"])) as http:
            response = await http.patch(
                f"/api/v1/demand/{line['id']}", json={"title": title}, headers={"If-Match": '"1"'}
            )
        return response.status_code

    codes = await asyncio.gather(edit("First"), edit("Second"), edit("Third"))
    assert sorted(codes) == [200, 412, 412]
    async with client(app, STAFF) as http:
        history = (await http.get(f"/api/v1/demand/{line['id']}/history")).json()["items"]
    assert [v["version"] for v in history] == [2, 1]
