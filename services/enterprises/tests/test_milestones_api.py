"""The milestone workflow through the API: submit, verify, reject, four eyes, readiness, events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from services.enterprises.tests.conftest import (
    ANCHOR,
    INTEGRATOR,
    MENTOR,
    STAFF_2,
    create_enterprise,
    enterprise_principal,
    outbox_count,
    outbox_events,
)
from shared.testing.apps import client

EVIDENCE = {"reference": "POL-123", "url": "https://docs.example/pol-123.pdf"}


def in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def milestone_url(enterprise_id: str, code: str) -> str:
    return f"/api/v1/enterprises/{enterprise_id}/milestones/{code}"


async def submit(app: FastAPI, enterprise_id: str, code: str, **fields: Any) -> httpx.Response:
    async with client(app, enterprise_principal(enterprise_id)) as own:
        return await own.patch(
            milestone_url(enterprise_id, code), json={"status": "submitted", "evidence": EVIDENCE} | fields
        )


async def verify_all_required(app: FastAPI, staff: httpx.AsyncClient, enterprise_id: str) -> None:
    """Submit and verify every milestone the enterprise's overall readiness asks for."""
    required = (await staff.get(f"/api/v1/enterprises/{enterprise_id}/readiness")).json()["gaps"]
    for gap in required:
        value = gap["required_value_pence"]
        assert (await submit(app, enterprise_id, gap["code"], value_pence=value)).status_code == 200
        verified = await staff.patch(milestone_url(enterprise_id, gap["code"]), json={"status": "verified"})
        assert verified.status_code == 200, verified.text


async def test_an_enterprise_submits_evidence_and_staff_verify_it(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    submitted = await submit(
        app, eid, "public_liability_insurance", value_pence=1_000_000_000, expires_at=in_days(200)
    )
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["status"] == "submitted"
    assert submitted.json()["submitted_by"]["role"] == "enterprise"
    assert submitted.headers["etag"] == '"1"'
    verified = await staff.patch(
        milestone_url(eid, "public_liability_insurance"),
        json={"status": "verified", "note": "certificate checked"},
        headers={"If-Match": '"1"'},
    )
    assert verified.status_code == 200, verified.text
    body = verified.json()
    assert body["status"] == "verified"
    assert body["verified_by"] == {"role": "staff", "actor": "test-staff", "subject_id": None}
    assert body["value_pence"] == 1_000_000_000
    assert body["version"] == 2
    types = [e["type"] for e in await outbox_events(app)]
    assert types.count("enterprises.milestone.submitted.v1") == 1
    assert types.count("enterprises.milestone.verified.v1") == 1
    verified_event = next(
        e for e in await outbox_events(app) if e["type"] == "enterprises.milestone.verified.v1"
    )
    assert verified_event["data"] | {"expires_at": None} == {
        "enterprise_id": eid,
        "code": "public_liability_insurance",
        "category": "insurance",
        "status": "verified",
        "version": 2,
        "expires_at": None,
        "value_pence": 1_000_000_000,
        "actor_role": "staff",
        "renewal_pending": False,
    }
    assert verified_event["data"]["expires_at"] is not None


async def test_verifying_a_milestone_announces_the_changed_readiness(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    await submit(app, eid, "legal_entity")
    await staff.patch(milestone_url(eid, "legal_entity"), json={"status": "verified"})
    changes = [e["data"] for e in await outbox_events(app) if e["type"] == "enterprises.readiness.changed.v1"]
    assert [c["version"] for c in changes] == [1, 2]
    assert "legal_entity" in changes[0]["missing"]
    assert "legal_entity" not in changes[1]["missing"]
    assert changes[1]["score"] > changes[0]["score"]
    assert [v["code"] for v in changes[1]["verified"]] == ["legal_entity"]
    readiness = (await staff.get(f"/api/v1/enterprises/{eid}/readiness")).json()
    assert readiness["score"] == changes[1]["score"]
    assert readiness["missing"] == changes[1]["missing"]


async def test_a_submission_without_evidence_is_refused_and_writes_nothing(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    before = await outbox_count(app)
    async with client(app, enterprise_principal(eid)) as own:
        response = await own.patch(milestone_url(eid, "case_studies"), json={"status": "submitted"})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "evidence"
        empty = await own.patch(
            milestone_url(eid, "case_studies"), json={"status": "submitted", "evidence": {}}
        )
        assert empty.status_code == 422
    assert await outbox_count(app) == before
    assert (await staff.get(milestone_url(eid, "case_studies"))).json()["status"] == "not_started"


async def test_insurance_needs_the_insured_amount(staff: httpx.AsyncClient, app: FastAPI) -> None:
    enterprise = await create_enterprise(staff)
    response = await submit(app, enterprise["id"], "employers_liability_insurance")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "value_pence"


async def test_an_expiry_in_the_past_is_refused(staff: httpx.AsyncClient, app: FastAPI) -> None:
    enterprise = await create_enterprise(staff)
    response = await submit(app, enterprise["id"], "cyber_essentials", expires_at=in_days(-1))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "expires_at"


async def test_verification_without_an_expiry_lapses_after_the_validity_period(
    staff: httpx.AsyncClient, app: FastAPI
) -> None:
    enterprise = await create_enterprise(staff)
    await submit(app, enterprise["id"], "cyber_essentials")
    verified = (
        await staff.patch(milestone_url(enterprise["id"], "cyber_essentials"), json={"status": "verified"})
    ).json()
    expires = datetime.fromisoformat(verified["expires_at"])
    assert timedelta(days=364) < expires - datetime.now(UTC) <= timedelta(days=365)


async def test_nobody_verifies_their_own_submission(app: FastAPI, staff: httpx.AsyncClient) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    on_behalf = await staff.patch(
        milestone_url(eid, "case_studies"), json={"status": "submitted", "evidence": EVIDENCE}
    )
    assert on_behalf.status_code == 200
    before = await outbox_count(app)
    own = await staff.patch(milestone_url(eid, "case_studies"), json={"status": "verified"})
    assert own.status_code == 403
    assert await outbox_count(app) == before
    async with client(app, STAFF_2) as colleague:
        assert (
            await colleague.patch(milestone_url(eid, "case_studies"), json={"status": "verified"})
        ).status_code == 200


async def test_a_mentor_verifies_or_rejects_but_never_submits(app: FastAPI, staff: httpx.AsyncClient) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    await submit(app, eid, "social_value_offer")
    async with client(app, MENTOR) as mentor:
        refused = await mentor.patch(
            milestone_url(eid, "case_studies"), json={"status": "submitted", "evidence": EVIDENCE}
        )
        assert refused.status_code == 403
        rejected = await mentor.patch(milestone_url(eid, "social_value_offer"), json={"status": "rejected"})
        assert rejected.status_code == 422  # a rejection says why
        assert rejected.json()["errors"][0]["field"] == "note"
        rejected = await mentor.patch(
            milestone_url(eid, "social_value_offer"),
            json={"status": "rejected", "note": "no measurable targets"},
        )
        assert rejected.status_code == 200
    event = [e for e in await outbox_events(app) if e["type"] == "enterprises.milestone.rejected.v1"]
    assert event[0]["data"]["actor_role"] == "mentor"
    resubmitted = await submit(app, eid, "social_value_offer")
    assert resubmitted.status_code == 200
    assert resubmitted.json()["status"] == "submitted"


async def test_an_enterprise_cannot_verify_or_reject(app: FastAPI, staff: httpx.AsyncClient) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    await submit(app, eid, "case_studies")
    async with client(app, enterprise_principal(eid)) as own:
        for status in ("verified", "rejected"):
            response = await own.patch(
                milestone_url(eid, "case_studies"), json={"status": status, "note": "x"}
            )
            assert response.status_code == 403


async def test_who_may_change_another_enterprises_milestones(app: FastAPI, staff: httpx.AsyncClient) -> None:
    enterprise = await create_enterprise(staff)
    url = milestone_url(enterprise["id"], "case_studies")
    body = {"status": "in_progress"}
    for principal, status in (
        (enterprise_principal(str(uuid.uuid4())), 404),
        (ANCHOR, 404),
        (INTEGRATOR, 403),
    ):
        async with client(app, principal) as http:
            assert (await http.patch(url, json=body)).status_code == status
    assert (await staff.get(url)).json()["status"] == "not_started"


async def test_forbidden_transitions_answer_409_with_what_is_allowed(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    not_submitted = await staff.patch(milestone_url(eid, "case_studies"), json={"status": "verified"})
    assert not_submitted.status_code == 409
    assert not_submitted.json()["current_status"] == "not_started"
    await submit(app, eid, "case_studies")
    async with client(app, STAFF_2) as colleague:
        await colleague.patch(milestone_url(eid, "case_studies"), json={"status": "verified"})
    async with client(app, enterprise_principal(eid)) as own:
        back = await own.patch(milestone_url(eid, "case_studies"), json={"status": "in_progress"})
    assert back.status_code == 409
    assert back.json()["allowed"] == ["submitted"]
    expired = await staff.patch(milestone_url(eid, "case_studies"), json={"status": "expired"})
    assert expired.status_code == 422


async def test_a_stale_milestone_etag_is_refused(app: FastAPI, staff: httpx.AsyncClient) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    await submit(app, eid, "case_studies")
    response = await staff.patch(
        milestone_url(eid, "case_studies"),
        json={"status": "rejected", "note": "x"},
        headers={"If-Match": '"0"'},
    )
    assert response.status_code == 412


async def test_an_unknown_milestone_code_is_404(staff: httpx.AsyncClient) -> None:
    enterprise = await create_enterprise(staff)
    response = await staff.patch(
        milestone_url(enterprise["id"], "moon_landing"), json={"status": "in_progress"}
    )
    assert response.status_code == 404


async def test_the_milestone_list_shows_every_definition_and_which_apply(staff: httpx.AsyncClient) -> None:
    enterprise = await create_enterprise(staff, employees=6, handles_personal_data=True)
    items = {
        i["code"]: i
        for i in (await staff.get(f"/api/v1/enterprises/{enterprise['id']}/milestones")).json()["items"]
    }
    assert len(items) == 17
    assert items["health_safety_policy"]["applies"] is True
    assert items["data_protection"]["applies"] is True
    assert items["cyber_essentials"]["applies"] is True
    assert items["modern_slavery_statement"]["applies"] is False
    assert items["iso_certifications"]["applies"] is False
    assert items["employers_liability_insurance"]["threshold_pence"] == 500_000_000
    assert all(i["status"] == "not_started" for i in items.values())


async def test_tender_ready_once_every_applicable_core_milestone_is_verified(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff, stage="incubating")
    eid = enterprise["id"]
    async with client(app, enterprise_principal(eid)) as own:
        await own.patch(milestone_url(eid, "legal_entity"), json={"status": "in_progress"})
    async with client(app, STAFF_2) as colleague:
        await verify_all_required(app, colleague, eid)
    readiness = (await staff.get(f"/api/v1/enterprises/{eid}/readiness")).json()
    assert readiness["ready"] is True
    assert readiness["score"] == 1.0
    ready = [e for e in await outbox_events(app) if e["type"] == "enterprises.readiness.changed.v1"][-1]
    assert ready["data"]["ready"] is True
    moved = await staff.patch(f"/api/v1/enterprises/{eid}", json={"stage": "tender_ready"})
    assert moved.status_code == 200, moved.text
    history = (
        await staff.get(f"/api/v1/enterprises/{eid}/history", params={"milestone_code": "legal_entity"})
    ).json()
    assert [h["action"] for h in history["items"]] == [
        "milestone_in_progress",
        "milestone_submitted",
        "milestone_verified",
    ]
    assert history["items"][2]["changes"]["status"] == {"from": "submitted", "to": "verified"}
    assert history["items"][2]["actor"]["actor"] == "second-staff-member"


async def test_readiness_for_an_unknown_demand_line_is_404(staff: httpx.AsyncClient) -> None:
    enterprise = await create_enterprise(staff)
    response = await staff.get(
        f"/api/v1/enterprises/{enterprise['id']}/readiness", params={"demand_id": str(uuid.uuid4())}
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
