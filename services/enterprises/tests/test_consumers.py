"""Events from the demand and mentoring services, published to the real nats-server as docs/EVENTS.md
describes them, change what the API answers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from nats.js import JetStreamContext

from services.enterprises.models import enterprise_milestones, mentoring_sessions
from services.enterprises.tests.conftest import (
    create_enterprise,
    enterprise_principal,
    outbox_events,
)
from shared.events import CONTENT_TYPE, new_event, stream_for
from shared.inbox import dead_letters_table, inbox_table
from shared.nats import ensure_stream
from shared.testing.apps import client
from shared.testing.polling import wait_until

EVIDENCE = {"reference": "REF-1"}


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    """JetStream on the test server, with the producers' streams the consumers read."""
    nc = await nats.connect(nats_url)
    jetstream = nc.jetstream()
    await ensure_stream(jetstream, stream_for("demand"))
    await ensure_stream(jetstream, stream_for("mentoring"))
    yield jetstream
    await nc.close()


async def publish(
    js: JetStreamContext, type_: str, data: dict[str, Any], subject: str, event_id: str | None = None
) -> str:
    event = new_event(type_, data, source=f"/seedbed/{type_.split('.')[0]}", subject=subject)
    if event_id is not None:
        event = event.model_copy(update={"id": event_id})
    await js.publish(type_, event.to_bytes(), headers={"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE})
    return event.id


def demand_line(
    demand_id: str, version: int, requirements: list[dict[str, Any]], status: str = "planned"
) -> dict[str, Any]:
    """A public demand line exactly as ``demand.item.published.v1`` carries it."""
    return {
        "demand_id": demand_id,
        "version": version,
        "anchor_id": str(uuid.uuid4()),
        "anchor_type": "council",
        "title": "Office cleaning, Civic Hall",
        "description": "Daily cleaning of the Civic Hall offices.",
        "cpv_codes": ["90910000-9"],
        "estimated_value_pence": 12_000_000,
        "min_value_pence": None,
        "max_value_pence": None,
        "category": "services",
        "expected_tender_date": "2027-06-01",
        "contract_start": "2027-09-01",
        "duration_months": 24,
        "lots": [],
        "suitable_for_sme": True,
        "suitable_for_vcse": True,
        "status": status,
        "requirements": requirements,
        "social_value_priorities": ["local employment"],
        "delivery_area": "Leeds",
        "external_ref": "LCC-2027-001",
    }


def session_completed(enterprise_id: str, mentor_id: str, codes: list[str]) -> dict[str, Any]:
    """``mentoring.session.completed.v1`` exactly as docs/EVENTS.md lists it."""
    return {
        "session_id": str(uuid.uuid4()),
        "sequence": 2,
        "mentor_id": mentor_id,
        "enterprise_id": enterprise_id,
        "start": "2027-03-01T10:00:00+00:00",
        "end": "2027-03-01T11:00:00+00:00",
        "timezone": "Europe/London",
        "topic": "Getting tender ready",
        "status": "completed",
        "milestone_code": codes[0] if codes else None,
        "outcome": "Reviewed the evidence together.",
        "signed_off_milestones": codes,
    }


async def test_readiness_for_a_demand_line_follows_its_published_requirements(
    app: FastAPI, staff: httpx.AsyncClient, js: JetStreamContext
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    demand_id = str(uuid.uuid4())
    url = f"/api/v1/enterprises/{eid}/readiness"
    requirements = [
        {"code": "public_liability_insurance", "min_value_pence": 500_000_000},
        {"code": "safeguarding_policy", "min_value_pence": None},
    ]
    await publish(js, "demand.item.published.v1", demand_line(demand_id, 1, requirements), demand_id)

    async def known() -> bool:
        return (await staff.get(url, params={"demand_id": demand_id})).status_code == 200

    await wait_until(known)
    readiness = (await staff.get(url, params={"demand_id": demand_id})).json()
    assert readiness["required"] == ["public_liability_insurance", "safeguarding_policy"]
    assert readiness["missing"] == ["public_liability_insurance", "safeguarding_policy"]
    assert readiness["score"] == 0.0

    # 1m GBP of cover does not meet the line's 5m GBP; 6m GBP does.
    milestone = f"/api/v1/enterprises/{eid}/milestones/public_liability_insurance"
    async with client(app, enterprise_principal(eid)) as own:
        await own.patch(
            milestone, json={"status": "submitted", "evidence": EVIDENCE, "value_pence": 100_000_000}
        )
    await staff.patch(milestone, json={"status": "verified"})
    gaps = (await staff.get(url, params={"demand_id": demand_id})).json()["gaps"]
    assert gaps[0] == {
        "code": "public_liability_insurance",
        "reason": "below_threshold",
        "required_value_pence": 500_000_000,
        "value_pence": 100_000_000,
    }
    async with client(app, enterprise_principal(eid)) as own:
        await own.patch(
            milestone, json={"status": "submitted", "evidence": EVIDENCE, "value_pence": 600_000_000}
        )
    await staff.patch(milestone, json={"status": "verified"})
    readiness = (await staff.get(url, params={"demand_id": demand_id})).json()
    assert readiness["missing"] == ["safeguarding_policy"]
    assert readiness["score"] == 0.5

    # An update drops the safeguarding requirement; a stale copy of version 1 changes nothing.
    await publish(js, "demand.item.updated.v1", demand_line(demand_id, 2, requirements[:1]), demand_id)
    await publish(js, "demand.item.updated.v1", demand_line(demand_id, 1, requirements), demand_id)

    async def updated() -> bool:
        return (await staff.get(url, params={"demand_id": demand_id})).json()["ready"] is True

    await wait_until(updated)
    await publish(
        js,
        "demand.item.withdrawn.v1",
        {
            "demand_id": demand_id,
            "version": 3,
            "anchor_id": str(uuid.uuid4()),
            "status": "withdrawn",
            "reason": "budget",
        },
        demand_id,
    )

    async def withdrawn() -> bool:
        return (await staff.get(url, params={"demand_id": demand_id})).status_code == 404

    await wait_until(withdrawn)
    consumer = next(c for c in app.state.runtime.consumers if c.spec.durable == "enterprises-demand")
    assert consumer.processed_total == 4
    # The stale version 1 never came back: the line stays withdrawn.
    assert (await staff.get(url, params={"demand_id": demand_id})).status_code == 404


async def test_a_redelivered_demand_event_is_applied_once(
    app: FastAPI, staff: httpx.AsyncClient, js: JetStreamContext
) -> None:
    enterprise = await create_enterprise(staff)
    demand_id = str(uuid.uuid4())
    data = demand_line(demand_id, 1, [{"code": "case_studies", "min_value_pence": None}])
    event_id = await publish(js, "demand.item.published.v1", data, demand_id)
    await publish(js, "demand.item.published.v1", data, demand_id, event_id=event_id)
    url = f"/api/v1/enterprises/{enterprise['id']}/readiness"

    async def known() -> bool:
        return (await staff.get(url, params={"demand_id": demand_id})).status_code == 200

    await wait_until(known)
    consumer = next(c for c in app.state.runtime.consumers if c.spec.durable == "enterprises-demand")
    assert consumer.processed_total == 1


async def test_a_mentor_sign_off_verifies_submitted_milestones_and_notes_the_rest(
    app: FastAPI, staff: httpx.AsyncClient, js: JetStreamContext
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    mentor_id = str(uuid.uuid4())
    async with client(app, enterprise_principal(eid)) as own:
        for code, status in (
            ("case_studies", "submitted"),
            ("social_value_offer", "submitted"),
            ("cdp_registration", "in_progress"),
        ):
            body: dict[str, Any] = {"status": status}
            if status == "submitted":
                body["evidence"] = EVIDENCE
            assert (
                await own.patch(f"/api/v1/enterprises/{eid}/milestones/{code}", json=body)
            ).status_code == 200
    data = session_completed(eid, mentor_id, ["case_studies", "cdp_registration", "no_such_milestone"])
    await publish(js, "mentoring.session.completed.v1", data, data["session_id"])

    async def verified() -> bool:
        item = (await staff.get(f"/api/v1/enterprises/{eid}/milestones/case_studies")).json()
        return item["status"] == "verified"

    await wait_until(verified)
    item = (await staff.get(f"/api/v1/enterprises/{eid}/milestones/case_studies")).json()
    assert item["verified_by"]["role"] == "mentor"
    assert item["verified_by"]["subject_id"] == mentor_id
    assert (await staff.get(f"/api/v1/enterprises/{eid}/milestones/cdp_registration")).json()[
        "status"
    ] == "in_progress"
    assert (await staff.get(f"/api/v1/enterprises/{eid}/milestones/social_value_offer")).json()[
        "status"
    ] == "submitted"
    history = (await staff.get(f"/api/v1/enterprises/{eid}/history")).json()["items"]
    notes = [h for h in history if h["action"] == "mentor_sign_off_noted"]
    assert [n["milestone_code"] for n in notes] == ["cdp_registration", None]
    assert "in_progress, not submitted" in notes[0]["note"]
    assert "not in the catalogue" in notes[1]["note"]
    events = await outbox_events(app)
    verified_events = [e for e in events if e["type"] == "enterprises.milestone.verified.v1"]
    assert [(e["data"]["code"], e["data"]["actor_role"]) for e in verified_events] == [
        ("case_studies", "mentor")
    ]
    readiness = [e for e in events if e["type"] == "enterprises.readiness.changed.v1"][-1]
    assert "case_studies" in [v["code"] for v in readiness["data"]["verified"]]


async def test_a_mentor_never_verifies_what_they_submitted(
    app: FastAPI, staff: httpx.AsyncClient, js: JetStreamContext
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    mentor_id = str(uuid.uuid4())
    # Evidence recorded as the mentor's own submission (e.g. carried over from an earlier system).
    async with app.state.database.transaction() as session:
        await session.execute(
            sa.insert(enterprise_milestones).values(
                enterprise_id=uuid.UUID(eid),
                code="case_studies",
                status="submitted",
                evidence=EVIDENCE,
                submitted_at=datetime.now(UTC),
                submitted_by_role="mentor",
                submitted_by_actor="mentor-key",
                submitted_by_subject=mentor_id,
                version=1,
                updated_at=datetime.now(UTC),
            )
        )
    data = session_completed(eid, mentor_id, ["case_studies"])
    await publish(js, "mentoring.session.completed.v1", data, data["session_id"])

    async def noted() -> bool:
        history = (await staff.get(f"/api/v1/enterprises/{eid}/history")).json()["items"]
        return any(h["action"] == "mentor_sign_off_noted" for h in history)

    await wait_until(noted)
    assert (await staff.get(f"/api/v1/enterprises/{eid}/milestones/case_studies")).json()[
        "status"
    ] == "submitted"


async def test_a_sign_off_for_an_unknown_enterprise_is_dead_lettered(
    app: FastAPI, js: JetStreamContext
) -> None:
    data = session_completed(str(uuid.uuid4()), str(uuid.uuid4()), ["case_studies"])
    await publish(js, "mentoring.session.completed.v1", data, data["session_id"])

    async def dead_lettered() -> bool:
        async with app.state.database.transaction(write=False) as session:
            return bool(await session.scalar(sa.select(sa.func.count()).select_from(dead_letters_table)))

    await wait_until(dead_lettered)


async def test_a_sign_off_of_lapsed_evidence_is_noted_not_verified(
    app: FastAPI, staff: httpx.AsyncClient, js: JetStreamContext
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    async with app.state.database.transaction() as session:
        await session.execute(
            sa.insert(enterprise_milestones).values(
                enterprise_id=uuid.UUID(eid),
                code="cyber_essentials",
                status="submitted",
                evidence=EVIDENCE,
                expires_at=datetime(2020, 1, 1, tzinfo=UTC),
                submitted_at=datetime(2019, 1, 1, tzinfo=UTC),
                submitted_by_role="enterprise",
                submitted_by_actor="enterprise-key",
                submitted_by_subject=eid,
                version=1,
                updated_at=datetime(2019, 1, 1, tzinfo=UTC),
            )
        )
    data = session_completed(eid, str(uuid.uuid4()), ["cyber_essentials"])
    await publish(js, "mentoring.session.completed.v1", data, data["session_id"])

    async def noted() -> bool:
        history = (await staff.get(f"/api/v1/enterprises/{eid}/history")).json()["items"]
        return any("cannot be verified" in (h["note"] or "") for h in history)

    await wait_until(noted)
    assert (await staff.get(f"/api/v1/enterprises/{eid}/milestones/cyber_essentials")).json()[
        "status"
    ] == "submitted"


async def test_a_completed_session_is_kept_once_for_the_impact_reports_hours(
    app: FastAPI, staff: httpx.AsyncClient, js: JetStreamContext
) -> None:
    eid = (await create_enterprise(staff))["id"]
    data = session_completed(eid, str(uuid.uuid4()), ["case_studies"])
    subject = data["session_id"]
    # The same session told twice (a redelivery under another event id), then an older sequence.
    events = [
        await publish(js, "mentoring.session.completed.v1", data, subject),
        await publish(js, "mentoring.session.completed.v1", data, subject),
        await publish(
            js, "mentoring.session.completed.v1", data | {"sequence": 1, "milestone_code": None}, subject
        ),
    ]

    async def handled() -> bool:
        async with app.state.database.transaction(write=False) as session:
            done = await session.scalar(
                sa.select(sa.func.count()).select_from(inbox_table).where(inbox_table.c.event_id.in_(events))
            )
        return done == len(events)

    await wait_until(handled)
    async with app.state.database.transaction(write=False) as session:
        [row] = (
            await session.execute(
                sa.select(mentoring_sessions).where(mentoring_sessions.c.enterprise_id == uuid.UUID(eid))
            )
        ).all()
    assert (row.sequence, row.milestone_code) == (2, "case_studies")
    assert (row.ends_at - row.starts_at).total_seconds() == 3600
