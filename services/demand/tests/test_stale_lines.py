"""Stale lines: a draft or planned line whose expected tender date passed without an update is
marked stale by the stale-lines job, leaves the pipeline and matching, its anchor is told
(``demand.item.stale.v1``), and an update with a new date makes it current again."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI

from services.demand import jobs, repository
from services.demand.app import create_app
from services.demand.events import DemandStalePayload
from services.demand.models import demand_lines
from services.demand.pipeline import storage
from services.demand.pipeline.cells import CellDeltas
from services.demand.settings import DemandSettings
from services.demand.tests.conftest import (
    INTEGRATOR,
    anchor_principal,
    feed_catalogue,
    line_body,
    outbox_events,
    serving,
)
from shared.db import utcnow
from shared.testing.apps import STAFF, client
from shared.testing.polling import wait_until

STALE = "demand.item.stale.v1"


def soon(days: int) -> str:
    return (utcnow().date() + timedelta(days=days)).isoformat()


async def post(app: FastAPI, anchor_id: str, **overrides: Any) -> dict[str, Any]:
    async with client(app, anchor_principal(anchor_id)) as http:
        response = await http.post("/api/v1/demand", json=line_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def get(app: FastAPI, line: dict[str, Any]) -> Any:
    async with client(app, anchor_principal(line["anchor_id"])) as http:
        return await http.get(f"/api/v1/demand/{line['id']}")


async def pipeline_count(app: FastAPI) -> int:
    async with client(app, INTEGRATOR) as http:
        answer = (await http.get("/api/v1/pipeline")).json()
    return int(answer["totals"]["count"] or 0)


async def exported(app: FastAPI) -> set[str]:
    async with client(app, INTEGRATOR) as http:
        package = (await http.get("/api/v1/demand/ocds")).json()
    return {release["ocid"] for release in package["releases"]}


def in_export(ocids: set[str], line: dict[str, Any]) -> bool:
    return any(ocid.endswith(line["id"]) for ocid in ocids)


async def backdate(app: FastAPI, line: dict[str, Any], days: int) -> None:
    """As if the line had been posted long ago, with a date that has since passed (its pipeline
    cell moved with it, as any change of a line moves it)."""
    async with app.state.database.transaction() as session:
        stored = await repository.get_line(session, line["id"])
        assert stored is not None
        past = utcnow().date() - timedelta(days=days)
        deltas = CellDeltas()
        deltas.move(
            stored, stored["anchor_type"], {**stored, "expected_tender_date": past}, stored["anchor_type"]
        )
        await storage.apply_cell_deltas(session, deltas)
        await session.execute(
            sa.update(demand_lines).where(demand_lines.c.id == line["id"]).values(expected_tender_date=past)
        )


async def test_lines_whose_tender_date_passed_are_marked_stale_leave_the_pipeline_and_their_anchor_is_told(
    app: FastAPI, settings: DemandSettings, new_anchor, refresh
) -> None:
    anchor, other = await new_anchor(), await new_anchor()
    a = anchor["id"]
    planned = await post(app, a, expected_tender_date=soon(2))
    draft = await post(app, a, status="draft", expected_tender_date=soon(2))
    hidden = await post(app, a, visibility="aggregate_only", expected_tender_date=soon(2))
    tendering = await post(app, a, status="tendering", expected_tender_date=soon(2))
    later = await post(app, other["id"], expected_tender_date=soon(30))
    await refresh()
    assert await pipeline_count(app) == 3  # planned, tendering, later (one anchor's hidden line is no block)
    before = await exported(app)
    assert in_export(before, planned) and in_export(before, later)

    # The service's "now" for the job: five days on, the planned, draft and hidden lines' date passed.
    now = utcnow() + timedelta(days=5)
    assert await jobs.mark_stale_lines(app.state.database, settings, now=now) == 3
    assert await jobs.mark_stale_lines(app.state.database, settings, now=now) == 0  # once only

    told = [e for e in await outbox_events(app) if e["type"] == STALE]
    assert sorted(e["subject"] for e in told) == sorted([planned["id"], draft["id"], hidden["id"]])
    for event in told:
        payload = DemandStalePayload.model_validate(event["data"])
        assert payload.anchor_id == a and payload.left_pipeline is True
        assert payload.expected_tender_date == soon(2) and payload.version == 1
    assert {e["data"]["visibility"] for e in told} == {"public", "aggregate_only"}
    assert not [e for e in await outbox_events(app) if e["type"] == "demand.item.updated.v1"]

    answer = await get(app, planned)
    assert answer.json()["stale_since"] is not None and answer.json()["version"] == 1
    assert answer.headers["etag"] == '"1-stale"'  # a cached copy without the flag is not current
    assert (await get(app, tendering)).json()["stale_since"] is None
    await refresh()
    assert await pipeline_count(app) == 2  # tendering and later
    after = await exported(app)
    assert not in_export(after, planned) and in_export(after, later)


async def test_a_new_date_makes_a_stale_line_current_again_and_other_edits_keep_it_stale(
    app: FastAPI, settings: DemandSettings, new_anchor, refresh
) -> None:
    anchor = await new_anchor()
    line = await post(app, anchor["id"])
    await backdate(app, line, 3)
    assert await jobs.mark_stale_lines(app.state.database, settings, now=utcnow()) == 1
    await refresh()
    assert await pipeline_count(app) == 0
    url = f"/api/v1/demand/{line['id']}"
    async with client(app, anchor_principal(anchor["id"])) as http:
        old_tag = await http.patch(url, json={"title": "Renamed"}, headers={"If-Match": '"1"'})
        assert old_tag.status_code == 412  # the line changed (it went stale) since that ETag
        renamed = await http.patch(url, json={"title": "Renamed"}, headers={"If-Match": '"1-stale"'})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["stale_since"] is not None and renamed.headers["etag"] == '"2-stale"'
        # A past date it does not already have is still refused.
        past = (utcnow().date() - timedelta(days=10)).isoformat()
        refused = await http.patch(
            url, json={"expected_tender_date": past}, headers={"If-Match": '"2-stale"'}
        )
        assert refused.status_code == 422
        fresh = await http.patch(
            url, json={"expected_tender_date": soon(60)}, headers={"If-Match": '"2-stale"'}
        )
        assert fresh.status_code == 200, fresh.text
    assert fresh.json()["stale_since"] is None and fresh.headers["etag"] == '"3"'
    await refresh()
    assert await pipeline_count(app) == 1
    updated = [e for e in await outbox_events(app) if e["type"] == "demand.item.updated.v1"]
    assert updated[-1]["data"]["expected_tender_date"] == soon(60)
    assert await jobs.mark_stale_lines(app.state.database, settings, now=utcnow()) == 0


async def test_a_stale_line_that_starts_tendering_is_current_again(
    app: FastAPI, settings: DemandSettings, new_anchor, refresh
) -> None:
    anchor = await new_anchor()
    line = await post(app, anchor["id"])
    await backdate(app, line, 3)
    await jobs.mark_stale_lines(app.state.database, settings, now=utcnow())
    async with client(app, anchor_principal(anchor["id"])) as http:
        started = await http.patch(
            f"/api/v1/demand/{line['id']}", json={"status": "tendering"}, headers={"If-Match": '"1-stale"'}
        )
    assert started.status_code == 200, started.text
    assert started.json()["stale_since"] is None
    await refresh()
    assert await pipeline_count(app) == 1


async def test_a_reimport_with_a_new_date_makes_a_stale_line_current_again(
    app: FastAPI, settings: DemandSettings, new_anchor, refresh
) -> None:
    anchor = await new_anchor()
    line = await post(app, anchor["id"], external_ref="IMP-1")
    await backdate(app, line, 3)
    await jobs.mark_stale_lines(app.state.database, settings, now=utcnow())
    body = line_body(external_ref="IMP-1", expected_tender_date=soon(90))
    async with client(app, anchor_principal(anchor["id"])) as http:
        response = await http.post(
            "/api/v1/demand/imports",
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/x-ndjson"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["updated"] == 1
    assert (await get(app, line)).json()["stale_since"] is None
    await refresh()
    assert await pipeline_count(app) == 1


async def test_with_the_setting_off_a_stale_line_stays_in_the_pipeline_and_its_anchor_is_still_told(
    app: FastAPI, settings: DemandSettings, new_anchor, refresh
) -> None:
    keep = settings.model_copy(update={"stale_lines_leave_pipeline": False})
    anchor = await new_anchor()
    line = await post(app, anchor["id"])
    await backdate(app, line, 3)
    assert await jobs.mark_stale_lines(app.state.database, keep, now=utcnow()) == 1
    [told] = [e for e in await outbox_events(app) if e["type"] == STALE]
    assert told["data"]["left_pipeline"] is False
    assert (await get(app, line)).json()["stale_since"] is not None
    await refresh()
    assert await pipeline_count(app) == 1
    assert in_export(await exported(app), line)


async def test_the_running_service_marks_lines_stale_by_its_clock(settings: DemandSettings) -> None:
    ahead = timedelta(days=0)

    def clock() -> datetime:
        return utcnow() + ahead

    running = settings.model_copy(update={"stale_lines_job": True, "stale_lines_poll_seconds": 0.1})
    async with serving(create_app(running, clock=clock)) as application:
        await feed_catalogue(application)
        async with client(application, STAFF) as http:
            anchor = (await http.post("/api/v1/anchors", json={"name": "Clocked", "type": "fire"})).json()
        line = await post(application, anchor["id"], expected_tender_date=soon(1))
        assert (await get(application, line)).json()["stale_since"] is None
        ahead = timedelta(days=3)

        async def told() -> bool:
            return any(
                e["subject"] == line["id"] for e in await outbox_events(application) if e["type"] == STALE
            )

        await wait_until(told, timeout=20)
        assert (await get(application, line)).json()["stale_since"] is not None
