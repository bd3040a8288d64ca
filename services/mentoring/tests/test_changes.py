"""Changing a session: reschedule (same id, higher sequence), cancel with a reason and notice,
complete with outcome and sign-offs, no-show; preconditions, events and who may do what."""

from __future__ import annotations

import uuid

import httpx

from services.mentoring.tests.helpers import (
    ANCHOR,
    INTEGRATOR,
    book,
    create_mentor,
    enterprise,
    london,
    mentor,
    overlapping_booked_pairs,
    slot_starts,
    stream_events,
)


async def _booked(staff: httpx.AsyncClient, **mentor_fields) -> tuple[dict, dict, uuid.UUID]:
    ada = await create_mentor(staff, **mentor_fields)
    firm = uuid.uuid4()
    response = await book(staff, ada["id"], firm, london(2027, 3, 29, 10), milestone_code="case_studies")
    assert response.status_code == 201, response.text
    return ada, response.json(), firm


async def test_rescheduling_moves_the_same_session_and_frees_the_old_slot(
    app, staff: httpx.AsyncClient, nats_url: str
) -> None:
    ada, session, _ = await _booked(staff)
    url = f"/api/v1/sessions/{session['id']}"
    moved = await staff.post(
        f"{url}/reschedule",
        json={"start": "2027-03-30T14:00:00+01:00", "reason": "Clash with a tender deadline"},
        headers={"If-Match": '"0"'},
    )
    assert moved.status_code == 200, moved.text
    body = moved.json()
    assert body["id"] == session["id"] and body["sequence"] == 1 and moved.headers["etag"] == '"1"'
    assert body["start"] == "2027-03-30T14:00:00+01:00" and body["end"] == "2027-03-30T15:00:00+01:00"
    assert body["reschedule_reason"] == "Clash with a tender deadline"
    free = slot_starts(
        await staff.get(
            f"/api/v1/mentors/{ada['id']}/slots",
            params={"start": "2027-03-29", "end": "2027-03-30", "duration_minutes": 60},
        )
    )
    assert "2027-03-29T10:00:00+01:00" in free
    events = await stream_events(nats_url, at_least=3)
    rescheduled = [e for e in events if e["type"] == "mentoring.session.rescheduled.v1"]
    assert len(rescheduled) == 1
    assert rescheduled[0]["data"]["sequence"] == 1
    assert rescheduled[0]["data"]["start"] == "2027-03-30T13:00:00Z"
    stale = await staff.post(
        f"{url}/reschedule", json={"start": "2027-03-31T14:00:00+01:00"}, headers={"If-Match": '"0"'}
    )
    assert stale.status_code == 412
    assert await overlapping_booked_pairs(app) == 0


async def test_rescheduling_into_a_taken_slot_or_outside_the_hours_changes_nothing(staff) -> None:
    ada, session, _ = await _booked(staff)
    other = (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 14))).json()
    url = f"/api/v1/sessions/{session['id']}"
    taken = await staff.post(f"{url}/reschedule", json={"start": "2027-03-29T14:30:00+01:00"})
    assert taken.status_code == 409 and taken.json()["conflict"]["session_id"] == other["id"]
    outside = await staff.post(f"{url}/reschedule", json={"start": "2027-03-29T20:00:00+01:00"})
    assert outside.status_code == 422 and outside.json()["errors"][0]["field"] == "start"
    # Moving a session to overlap its own old time is fine: it does not collide with itself.
    shifted = await staff.post(f"{url}/reschedule", json={"start": "2027-03-29T10:30:00+01:00"})
    assert shifted.status_code == 200, shifted.text
    assert (await staff.get(url)).json()["sequence"] == 1


async def test_cancelling_needs_a_reason_frees_the_slot_and_announces_it(
    staff: httpx.AsyncClient, nats_url: str
) -> None:
    ada, session, firm = await _booked(staff)
    url = f"/api/v1/sessions/{session['id']}"
    assert (await staff.post(f"{url}/cancel", json={})).json()["errors"][0]["field"] == "reason"
    cancelled = await staff.post(f"{url}/cancel", json={"reason": "Mentor unwell"})
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["sequence"] == 1
    assert (
        body["cancellation"]["reason"] == "Mentor unwell"
        and body["cancellation"]["cancelled_by_role"] == "staff"
    )
    again = await staff.post(f"{url}/cancel", json={"reason": "twice"})
    assert again.status_code == 409 and again.json()["type"].endswith("/session-not-booked")
    assert (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10))).status_code == 201
    events = await stream_events(nats_url, at_least=4)
    cancelled_events = [e for e in events if e["type"] == "mentoring.session.cancelled.v1"]
    assert [e["data"]["reason"] for e in cancelled_events] == ["Mentor unwell"]
    assert (
        cancelled_events[0]["data"]["status"] == "cancelled" and cancelled_events[0]["data"]["sequence"] == 1
    )
    assert cancelled_events[0]["data"]["enterprise_id"] == str(firm)


async def test_participants_must_respect_the_cancellation_notice_but_staff_need_not(
    as_principal, staff: httpx.AsyncClient, clock
) -> None:
    ada, session, firm = await _booked(staff, availability={"cancellation_notice_minutes": 24 * 60})
    url = f"/api/v1/sessions/{session['id']}"
    clock.now = london(2027, 3, 28, 11)  # 23 hours before 10:00 BST on the 29th
    async with as_principal(enterprise(firm)) as http:
        late = await http.post(f"{url}/cancel", json={"reason": "Something came up"})
        assert late.status_code == 409 and late.json()["type"].endswith("/cancellation-notice")
        moved = await http.post(f"{url}/reschedule", json={"start": "2027-03-31T10:00:00+01:00"})
        assert moved.status_code == 409
    async with as_principal(mentor(ada["id"])) as http:
        assert (await http.post(f"{url}/cancel", json={"reason": "Unwell"})).status_code == 409
    assert (await staff.post(f"{url}/cancel", json={"reason": "Agreed by phone"})).status_code == 200
    clock.now = london(2027, 3, 1, 9)
    second = (await book(staff, ada["id"], firm, london(2027, 3, 30, 10))).json()
    async with as_principal(enterprise(firm)) as http:
        early = await http.post(f"/api/v1/sessions/{second['id']}/cancel", json={"reason": "Plans changed"})
    assert early.status_code == 200 and early.json()["cancellation"]["cancelled_by_role"] == "enterprise"


async def test_the_mentor_completes_a_started_session_with_outcome_and_sign_offs(
    as_principal, staff: httpx.AsyncClient, clock, nats_url: str
) -> None:
    ada, session, firm = await _booked(staff)
    url = f"/api/v1/sessions/{session['id']}/complete"
    outcome = {
        "outcome": "Insurance schedule reviewed; cover adequate for the lot",
        "notes": "Broker quote attached to the evidence",
        "action_items": ["Upload the certificate", "Ask the buyer about the cover level"],
        "signed_off_milestones": ["public_liability_insurance", "case_studies", "case_studies"],
    }
    too_early = await staff.post(url, json=outcome)
    assert too_early.status_code == 409 and too_early.json()["type"].endswith("/session-not-started")
    clock.now = london(2027, 3, 29, 11, 5)
    async with as_principal(enterprise(firm)) as http:
        assert (await http.post(url, json=outcome)).status_code == 403  # a participant, not its mentor
    async with as_principal(enterprise()) as http:
        assert (await http.post(url, json=outcome)).status_code == 404
    async with as_principal(mentor(ada["id"])) as http:
        done = await http.post(url, json=outcome)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "completed" and body["sequence"] == 1
    assert body["outcome"]["signed_off_milestones"] == ["public_liability_insurance", "case_studies"]
    assert body["outcome"]["action_items"] == outcome["action_items"]
    events = await stream_events(nats_url, at_least=3)
    completed = [e for e in events if e["type"] == "mentoring.session.completed.v1"]
    assert len(completed) == 1
    assert completed[0]["data"]["outcome"] == outcome["outcome"]
    assert completed[0]["data"]["signed_off_milestones"] == ["public_liability_insurance", "case_studies"]
    assert set(completed[0]["data"]) == {
        "session_id", "sequence", "mentor_id", "enterprise_id", "start", "end", "timezone", "topic",
        "status", "milestone_code", "outcome", "signed_off_milestones",
    }  # fmt: skip
    bad = await staff.post(url, json=outcome | {"signed_off_milestones": ["Not A Code"]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "signed_off_milestones.0"


async def test_a_no_show_is_recorded_once_the_session_has_started(
    staff: httpx.AsyncClient, clock, nats_url
) -> None:
    _, session, _ = await _booked(staff)
    url = f"/api/v1/sessions/{session['id']}/no-show"
    assert (await staff.post(url, json={})).status_code == 409
    clock.now = london(2027, 3, 29, 10, 20)
    recorded = await staff.post(url, json={"absent_party": "enterprise", "note": "No answer on the call"})
    assert recorded.status_code == 200, recorded.text
    assert recorded.json()["no_show"]["absent_party"] == "enterprise"
    assert recorded.json()["status"] == "no_show"
    assert (await staff.post(url, json={})).status_code == 409
    events = await stream_events(nats_url, at_least=3)
    assert [e["data"]["status"] for e in events if e["type"] == "mentoring.session.no_show.v1"] == ["no_show"]


async def test_who_sees_and_changes_a_session(as_principal, staff: httpx.AsyncClient) -> None:
    ada, session, firm = await _booked(staff)
    url = f"/api/v1/sessions/{session['id']}"
    for principal, expected in [
        (enterprise(firm), 200),
        (mentor(ada["id"]), 200),
        (enterprise(), 404),
        (mentor(uuid.uuid4()), 404),
        (ANCHOR, 404),
        (INTEGRATOR, 403),
    ]:
        async with as_principal(principal) as http:
            assert (await http.get(url)).status_code == expected, principal
            assert (await http.get(f"{url}/ics")).status_code == expected, principal
            if expected != 200:
                cancel = await http.post(f"{url}/cancel", json={"reason": "not mine"})
                assert cancel.status_code == expected, principal


async def test_session_lists_show_each_party_only_its_own(
    as_principal, staff: httpx.AsyncClient, clock
) -> None:
    ada = await create_mentor(staff)
    bob = await create_mentor(staff, name="Bob", email="bob@example.org")
    firm, other = uuid.uuid4(), uuid.uuid4()
    ids = [
        (await book(staff, ada["id"], firm, london(2027, 3, 29, 9))).json()["id"],
        (await book(staff, bob["id"], firm, london(2027, 3, 29, 11))).json()["id"],
        (await book(staff, ada["id"], other, london(2027, 3, 30, 9))).json()["id"],
    ]
    async with as_principal(enterprise(firm)) as http:
        mine = (await http.get("/api/v1/sessions")).json()["items"]
        assert [s["id"] for s in mine] == ids[:2]
        assert (await http.get("/api/v1/sessions", params={"enterprise_id": str(other)})).json()[
            "items"
        ] == []
    async with as_principal(mentor(ada["id"])) as http:
        assert [s["id"] for s in (await http.get("/api/v1/sessions")).json()["items"]] == [ids[0], ids[2]]
    async with as_principal(ANCHOR) as http:
        assert (await http.get("/api/v1/sessions")).status_code == 403
    await staff.post(f"/api/v1/sessions/{ids[2]}/cancel", json={"reason": "x"})
    everything = (await staff.get("/api/v1/sessions", params={"limit": 2})).json()
    assert [s["id"] for s in everything["items"]] == ids[:2] and everything["next_cursor"]
    rest = (
        await staff.get("/api/v1/sessions", params={"limit": 2, "cursor": everything["next_cursor"]})
    ).json()
    assert [s["id"] for s in rest["items"]] == ids[2:] and rest["next_cursor"] is None
    booked = (
        await staff.get("/api/v1/sessions", params={"status": "booked", "from": "2027-03-29T10:00:00Z"})
    ).json()
    assert [s["id"] for s in booked["items"]] == [ids[1]]
    assert (await staff.get("/api/v1/sessions", params={"status": "lost"})).status_code == 422
