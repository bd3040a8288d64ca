"""Recommendations: the service learns enterprises and their open milestones from the enterprises
events (fixtures built exactly per docs/EVENTS.md, published to the real nats-server), drops stale
ones by version, and ranks mentors by expertise coverage, then remaining capacity."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
import sqlalchemy as sa

from services.mentoring.models import enterprises
from services.mentoring.recommendations import expertise_for
from services.mentoring.tests.helpers import (
    ANCHOR,
    INTEGRATOR,
    book,
    create_mentor,
    enterprise,
    london,
    mentor,
)
from shared.events import CONTENT_TYPE, CloudEvent, stream_for
from shared.inbox import dead_letters_table
from shared.nats import ensure_stream
from shared.testing.polling import wait_until

SOURCE = "/seedbed/enterprises"


class EnterprisesStream:
    """Publishes enterprises events the way the enterprises service's outbox relay does."""

    def __init__(self, nc: nats.NATS) -> None:
        self.js = nc.jetstream()

    async def publish(self, type_: str, data: dict[str, Any], *, event_id: str | None = None) -> str:
        event = CloudEvent(
            id=event_id or str(uuid.uuid4()),
            type=type_,
            source=SOURCE,
            subject=data.get("enterprise_id"),
            data=data,
        )
        await self.js.publish(
            type_, event.to_bytes(), headers={"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE}
        )
        return event.id


@pytest.fixture
async def enterprises_stream(nats_url: str) -> AsyncIterator[EnterprisesStream]:
    nc = await nats.connect(nats_url)
    await ensure_stream(nc.jetstream(), stream_for("enterprises"))
    yield EnterprisesStream(nc)
    await nc.close()


def snapshot(enterprise_id: uuid.UUID, version: int, **changes: Any) -> dict[str, Any]:
    return {
        "enterprise_id": str(enterprise_id),
        "version": version,
        "name": "Hyde Park Catering CIC",
        "legal_form": "cic_limited_by_guarantee",
        "stage": "incubating",
        "cohort_id": None,
        "postcode": "LS6 2QR",
        "cpv_codes": ["55520000"],
        "max_contract_value_pence": 25_000_000,
        "employees": 8,
        "turnover_pence": 42_000_000,
        "vcse": True,
        "size_class": "micro",
    } | changes


def readiness(enterprise_id: uuid.UUID, version: int, missing: list[str]) -> dict[str, Any]:
    return {
        "enterprise_id": str(enterprise_id),
        "version": version,
        "score": 0.5,
        "ready": not missing,
        "missing": missing,
        "expiring_soon": [],
        "verified": [{"code": "legal_entity", "expires_at": None, "value_pence": None}],
    }


async def recommendations(http: httpx.AsyncClient, enterprise_id: uuid.UUID) -> dict[str, Any]:
    response = await http.get("/api/v1/mentors/recommendations", params={"enterprise_id": str(enterprise_id)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def until_open(http: httpx.AsyncClient, enterprise_id: uuid.UUID, missing: list[str]) -> dict[str, Any]:
    async def learnt() -> dict[str, Any] | None:
        body = await recommendations(http, enterprise_id)
        return body if body["open_milestones"] == missing else None

    found: dict[str, Any] = await wait_until(learnt)
    return found


def test_milestone_codes_map_to_the_expertise_that_helps() -> None:
    assert {"insurance"} <= expertise_for("public_liability_insurance")
    assert {"policy"} <= expertise_for("health_safety_policy")
    assert {"bidding"} <= expertise_for("case_studies")
    assert {"accreditation"} <= expertise_for("iso_27001")  # a code staff added: by its words
    assert expertise_for("advisory_board") == {"advisory_board"}  # "iso" inside a word does not count


async def test_mentors_are_ranked_by_coverage_of_the_open_milestones_then_by_capacity(
    enterprises_stream: EnterprisesStream, app, staff: httpx.AsyncClient
) -> None:
    firm = uuid.uuid4()
    await enterprises_stream.publish("enterprises.enterprise.registered.v1", snapshot(firm, 1))
    open_now = ["public_liability_insurance", "health_safety_policy", "case_studies"]
    await enterprises_stream.publish("enterprises.readiness.changed.v1", readiness(firm, 1, open_now))

    ada = await create_mentor(staff, name="Ada", email="ada@example.org", expertise=["insurance", "policy"])
    bob = await create_mentor(staff, name="Bob", email="bob@example.org", expertise=["bidding"])
    cal = await create_mentor(
        staff, name="Cal", email="cal@example.org", expertise=["insurance", "policy"], max_sessions_per_week=2
    )
    dee = await create_mentor(
        staff,
        name="Dee",
        email="dee@example.org",
        expertise=["insurance", "policy", "bidding"],
        max_active_mentees=1,
    )
    eve = await create_mentor(staff, name="Eve", email="eve@example.org", expertise=["legal"])
    assert (
        await book(staff, cal["id"], uuid.uuid4(), london(2027, 3, 3, 10))
    ).status_code == 201  # this week
    assert (
        await book(staff, dee["id"], uuid.uuid4(), london(2027, 3, 3, 10))
    ).status_code == 201  # Dee is full

    body = await until_open(staff, firm, open_now)
    assert body["enterprise_known"] is True
    assert [item["name"] for item in body["items"]] == ["Ada", "Cal", "Bob", "Eve"]
    first, second = body["items"][0], body["items"][1]
    assert first["mentor_id"] == ada["id"]
    assert first["covered_milestones"] == ["public_liability_insurance", "health_safety_policy"]
    assert first["coverage"] == pytest.approx(2 / 3, abs=1e-3)
    assert second["sessions_left_this_week"] == 1 and second["score"] < first["score"]
    assert dee["id"] not in [item["mentor_id"] for item in body["items"]]

    # Readiness moves on: only case studies are open now, so the bid writer leads.
    await enterprises_stream.publish("enterprises.readiness.changed.v1", readiness(firm, 2, ["case_studies"]))
    body = await until_open(staff, firm, ["case_studies"])
    assert body["items"][0]["mentor_id"] == bob["id"]
    # Nobody else helps with case studies: capacity orders them, then the name.
    assert [item["mentor_id"] for item in body["items"]] == [bob["id"], ada["id"], eve["id"], cal["id"]]


async def test_stale_and_repeated_enterprise_events_change_nothing(
    enterprises_stream: EnterprisesStream, app, staff: httpx.AsyncClient
) -> None:
    firm = uuid.uuid4()
    await create_mentor(staff, expertise=["insurance"])
    await enterprises_stream.publish(
        "enterprises.readiness.changed.v1", readiness(firm, 3, ["cyber_essentials"])
    )
    await until_open(staff, firm, ["cyber_essentials"])
    repeated = await enterprises_stream.publish(
        "enterprises.readiness.changed.v1", readiness(firm, 2, ["public_liability_insurance"])
    )
    await enterprises_stream.publish(
        "enterprises.enterprise.stage_changed.v1",
        snapshot(firm, 5, stage="tender_ready", from_stage="incubating", to_stage="tender_ready"),
    )
    await enterprises_stream.publish(
        "enterprises.enterprise.updated.v1", snapshot(firm, 4, stage="incubating")
    )
    await enterprises_stream.publish(  # the same event again, as a redelivery past the duplicate window
        "enterprises.readiness.changed.v1",
        readiness(firm, 2, ["public_liability_insurance"]),
        event_id=repeated,
    )
    marker = uuid.uuid4()  # an event behind all of those: once it is applied, they were all handled
    await enterprises_stream.publish(
        "enterprises.readiness.changed.v1", readiness(marker, 1, ["case_studies"])
    )
    await until_open(staff, marker, ["case_studies"])
    assert (await recommendations(staff, firm))["open_milestones"] == ["cyber_essentials"]
    async with app.state.database.transaction(write=False) as session:
        stored = (
            await session.execute(
                sa.select(enterprises.c.stage, enterprises.c.profile_version).where(enterprises.c.id == firm)
            )
        ).first()
    assert tuple(stored) == ("tender_ready", 5)


async def test_a_malformed_enterprise_event_is_dead_lettered_and_the_next_ones_flow(
    enterprises_stream: EnterprisesStream, app, staff: httpx.AsyncClient
) -> None:
    await enterprises_stream.publish(
        "enterprises.readiness.changed.v1", {"version": 1, "missing": "not a list"}
    )
    firm = uuid.uuid4()
    await enterprises_stream.publish("enterprises.readiness.changed.v1", readiness(firm, 1, ["case_studies"]))
    await until_open(staff, firm, ["case_studies"])
    async with app.state.database.transaction(write=False) as session:
        dead = (await session.execute(sa.select(dead_letters_table.c.consumer))).scalars().all()
    assert dead == ["mentoring-enterprises"]


async def test_an_enterprise_not_heard_of_yet_gets_mentors_by_capacity(app, staff: httpx.AsyncClient) -> None:
    await create_mentor(staff, name="Full", email="f@example.org", max_sessions_per_week=1)
    await create_mentor(staff, name="Free", email="g@example.org")
    full = (await staff.get("/api/v1/mentors", params={"limit": 1})).json()["items"][0]
    await book(staff, full["id"], uuid.uuid4(), london(2027, 3, 2, 10))
    body = await recommendations(staff, uuid.uuid4())
    assert body["enterprise_known"] is False and body["open_milestones"] == []
    assert [item["name"] for item in body["items"]] == ["Free", "Full"]


async def test_who_may_ask_for_recommendations(as_principal, staff: httpx.AsyncClient) -> None:
    firm = uuid.uuid4()
    params = {"enterprise_id": str(firm)}
    for principal, expected in [
        (enterprise(firm), 200),
        (enterprise(), 404),
        (mentor(uuid.uuid4()), 200),
        (ANCHOR, 403),
        (INTEGRATOR, 403),
    ]:
        async with as_principal(principal) as http:
            response = await http.get("/api/v1/mentors/recommendations", params=params)
            assert response.status_code == expected, principal
