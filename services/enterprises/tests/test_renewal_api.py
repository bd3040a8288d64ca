"""Early renewal: a verified milestone resubmitted before it expires keeps its verification
standing (readiness, stage, events) until the renewal is reviewed or the standing one lapses."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from services.enterprises import events as ev
from services.enterprises import read_models
from services.enterprises.jobs import run_expiry
from services.enterprises.tests.conftest import (
    MENTOR,
    STAFF_2,
    create_enterprise,
    enterprise_principal,
    outbox_events,
)
from services.enterprises.tests.test_expiry_job import counts, verified_until
from services.enterprises.tests.test_milestones_api import (
    in_days,
    milestone_url,
    submit,
    verify_all_required,
)
from shared.db import Database
from shared.testing.apps import client

CODE = "employers_liability_insurance"  # applies: the enterprise has employees; 5m GBP threshold
RENEWAL = {"reference": "EL-2028", "url": "https://docs.example/el-2028.pdf"}


async def readiness_events(app: FastAPI, eid: str) -> list[dict]:
    return [
        e["data"]
        for e in await outbox_events(app)
        if e["type"] == ev.READINESS_CHANGED and e["subject"] == eid
    ]


async def tender_ready_enterprise(app: FastAPI, staff: httpx.AsyncClient) -> str:
    eid = (await create_enterprise(staff, stage="incubating"))["id"]
    async with client(app, STAFF_2) as colleague:
        await verify_all_required(app, colleague, eid)
    moved = await staff.patch(f"/api/v1/enterprises/{eid}", json={"stage": "tender_ready"})
    assert moved.status_code == 200, moved.text
    return eid


async def renew(app: FastAPI, eid: str, code: str = CODE, **fields: object) -> httpx.Response:
    body = {"evidence": RENEWAL, "value_pence": 600_000_000, "expires_at": in_days(400)} | fields
    return await submit(app, eid, code, **body)


async def test_an_early_renewal_keeps_readiness_the_stage_and_announces_no_gap(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    eid = await tender_ready_enterprise(app, staff)
    before = (await staff.get(milestone_url(eid, CODE))).json()
    assert before["status"] == "verified" and before["expires_at"] is not None
    announced = await readiness_events(app, eid)
    assert announced[-1]["ready"] is True

    renewed = await renew(app, eid)
    assert renewed.status_code == 200, renewed.text
    body = renewed.json()
    assert body["status"] == "submitted" and body["renewal_pending"] is True
    assert body["evidence"] == RENEWAL and body["value_pence"] == 600_000_000
    assert body["standing"]["expires_at"] == before["expires_at"]
    assert body["standing"]["value_pence"] == before["value_pence"]
    assert body["standing"]["verified_by"] == before["verified_by"]
    assert body["standing"]["evidence"] == before["evidence"]

    # Nothing a consumer sees of readiness changed: no readiness.changed at all, so no "not ready".
    assert await readiness_events(app, eid) == announced
    readiness = (await staff.get(f"/api/v1/enterprises/{eid}/readiness")).json()
    assert readiness["ready"] is True and readiness["missing"] == []
    standing = next(v for v in readiness["verified"] if v["code"] == CODE)
    assert standing["expires_at"] == before["expires_at"] and standing["renewal_pending"] is True
    submitted = [e for e in await outbox_events(app) if e["type"] == ev.MILESTONE_SUBMITTED]
    assert submitted[-1]["data"]["renewal_pending"] is True
    assert (await staff.get(f"/api/v1/enterprises/{eid}")).json()["stage"] == "tender_ready"
    listed = (await staff.get(f"/api/v1/enterprises/{eid}/milestones")).json()["items"]
    assert next(i for i in listed if i["code"] == CODE)["renewal_pending"] is True

    # Readiness for a demand line counts the standing verification's value against thresholds.
    demand_id = uuid.uuid4()
    async with app.state.database.transaction() as session:
        await read_models.record_demand_line(
            session,
            demand_id,
            version=1,
            status="planned",
            title=None,
            requirements=[
                {"code": CODE, "min_value_pence": before["value_pence"]},
                {"code": "legal_entity", "min_value_pence": None},
            ],
        )
    for_line = (
        await staff.get(f"/api/v1/enterprises/{eid}/readiness", params={"demand_id": str(demand_id)})
    ).json()
    assert for_line["ready"] is True, for_line

    # A stage move that needs readiness still passes while the renewal is pending.
    back = await staff.patch(f"/api/v1/enterprises/{eid}", json={"stage": "incubating"})
    assert back.status_code == 200
    again = await staff.patch(f"/api/v1/enterprises/{eid}", json={"stage": "tender_ready"})
    assert again.status_code == 200, again.text


async def test_a_renewal_without_new_evidence_is_refused(app: FastAPI, staff: httpx.AsyncClient) -> None:
    eid = await tender_ready_enterprise(app, staff)
    async with client(app, enterprise_principal(eid)) as own:
        refused = await own.patch(milestone_url(eid, CODE), json={"status": "submitted", "value_pence": 1})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "evidence"
    assert (await staff.get(milestone_url(eid, CODE))).json()["status"] == "verified"


async def test_verifying_the_renewal_replaces_the_standing_verification(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    eid = await tender_ready_enterprise(app, staff)
    before = (await staff.get(milestone_url(eid, CODE))).json()
    renewal_expiry = (await renew(app, eid)).json()["expires_at"]
    async with client(app, MENTOR) as mentor:
        verified = await mentor.patch(milestone_url(eid, CODE), json={"status": "verified"})
    assert verified.status_code == 200, verified.text
    body = verified.json()
    assert body["status"] == "verified" and body["renewal_pending"] is False and body["standing"] is None
    assert body["expires_at"] == renewal_expiry != before["expires_at"]
    assert body["value_pence"] == 600_000_000 and body["verified_by"]["role"] == "mentor"
    latest = (await readiness_events(app, eid))[-1]
    assert latest["ready"] is True
    assert next(v for v in latest["verified"] if v["code"] == CODE)["value_pence"] == 600_000_000
    history = (await staff.get(f"/api/v1/enterprises/{eid}/history", params={"milestone_code": CODE})).json()[
        "items"
    ]
    assert [h["action"] for h in history][-2:] == ["milestone_renewal_submitted", "milestone_verified"]
    assert history[-2]["changes"]["standing_expires_at"]["to"] is not None
    assert history[-1]["changes"]["standing_expires_at"]["to"] is None


async def test_rejecting_the_renewal_returns_to_the_standing_verification(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    eid = await tender_ready_enterprise(app, staff)
    before = (await staff.get(milestone_url(eid, CODE))).json()
    announced = await readiness_events(app, eid)
    assert (await renew(app, eid)).status_code == 200
    rejected = await staff.patch(
        milestone_url(eid, CODE), json={"status": "rejected", "note": "certificate is for another firm"}
    )
    assert rejected.status_code == 200, rejected.text
    body = rejected.json()
    assert body["status"] == "verified" and body["standing"] is None and body["renewal_pending"] is False
    for name in ("expires_at", "value_pence", "evidence", "verified_at", "verified_by", "submitted_by"):
        assert body[name] == before[name], name
    assert await readiness_events(app, eid) == announced  # ready throughout
    event = [e for e in await outbox_events(app) if e["type"] == ev.MILESTONE_REJECTED][-1]["data"]
    assert event["status"] == "verified" and event["expires_at"] is not None
    history = (await staff.get(f"/api/v1/enterprises/{eid}/history", params={"milestone_code": CODE})).json()[
        "items"
    ]
    assert history[-1]["action"] == "milestone_renewal_rejected"
    assert history[-1]["note"] == "certificate is for another firm"
    assert history[-1]["changes"]["status"] == {"from": "submitted", "to": "verified"}
    assert history[-1]["actor"]["role"] == "staff"
    # The enterprise may renew again.
    again = await renew(app, eid, evidence={"reference": "EL-2028b"})
    assert again.status_code == 200 and again.json()["renewal_pending"] is True


async def test_the_standing_verification_lapses_once_while_the_renewal_is_pending(
    app: FastAPI, staff: httpx.AsyncClient, database_url: str
) -> None:
    now = datetime.now(UTC)
    standing_until = now + timedelta(days=10)
    subjects = []
    enterprises = []
    for _ in range(3):
        eid = (await create_enterprise(staff))["id"]
        enterprises.append(eid)
        await verified_until(app, eid, "cyber_essentials", standing_until)
        assert (await renew(app, eid, "cyber_essentials")).status_code == 200
        subjects.append(f"{eid}/cyber_essentials")
    warning = timedelta(days=30)
    replicas = [app.state.database, Database(database_url, pool_size=4)]
    try:
        runs = await asyncio.gather(
            *(run_expiry(db, warning=warning, batch=2, now=now) for db in replicas * 2)
        )
        assert sum(r.warned for r in runs) == len(subjects)
        later = now + timedelta(days=11)
        runs = await asyncio.gather(
            *(run_expiry(db, warning=warning, batch=2, now=later) for db in replicas * 2)
        )
        assert sum(r.expired for r in runs) == len(subjects)
        again = await run_expiry(Database(database_url, pool_size=2), warning=warning, now=later)
        assert (again.warned, again.expired) == (0, 0)
    finally:
        await replicas[1].dispose()
    events = await outbox_events(app)
    assert counts(events, ev.MILESTONE_EXPIRING) == Counter(dict.fromkeys(subjects, 1))
    assert counts(events, ev.MILESTONE_EXPIRED) == Counter(dict.fromkeys(subjects, 1))
    expired = [e["data"] for e in events if e["type"] == ev.MILESTONE_EXPIRED]
    assert all(d["status"] == "submitted" and d["renewal_pending"] for d in expired)
    assert {datetime.fromisoformat(d["expires_at"]) for d in expired} == {standing_until}
    for eid in enterprises:
        body = (await staff.get(milestone_url(eid, "cyber_essentials"))).json()
        assert body["status"] == "submitted" and body["standing"] is None
        assert body["evidence"] == RENEWAL
        history = (
            await staff.get(
                f"/api/v1/enterprises/{eid}/history", params={"milestone_code": "cyber_essentials"}
            )
        ).json()["items"]
        actions = [h["action"] for h in history]
        assert actions.count("standing_verification_expiring") == 1
        assert actions.count("standing_verification_expired") == 1
    # The renewal can still be verified afterwards.
    async with client(app, STAFF_2) as colleague:
        verified = await colleague.patch(
            milestone_url(enterprises[0], "cyber_essentials"), json={"status": "verified"}
        )
    assert verified.status_code == 200 and verified.json()["status"] == "verified"


async def test_a_verification_warned_of_before_its_renewal_is_not_warned_again(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    now = datetime.now(UTC)
    eid = (await create_enterprise(staff))["id"]
    await verified_until(app, eid, "cyber_essentials", now + timedelta(days=10))
    warning = timedelta(days=30)
    assert (await run_expiry(app.state.database, warning=warning, now=now)).warned == 1
    assert (await renew(app, eid, "cyber_essentials")).status_code == 200
    assert (await run_expiry(app.state.database, warning=warning, now=now)).warned == 0
    # Rejected renewal: back to the verification, already warned of, not warned again either.
    rejected = await staff.patch(
        milestone_url(eid, "cyber_essentials"), json={"status": "rejected", "note": "expired certificate"}
    )
    assert rejected.json()["status"] == "verified"
    assert (await run_expiry(app.state.database, warning=warning, now=now)).warned == 0
    expired = await run_expiry(app.state.database, warning=warning, now=now + timedelta(days=11))
    assert expired.expired == 1
    assert (await staff.get(milestone_url(eid, "cyber_essentials"))).json()["status"] == "expired"
