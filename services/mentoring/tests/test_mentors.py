"""Mentors and their availability rules: registration, changes with ETags, validation, access, events."""

from __future__ import annotations

import uuid

import httpx

from services.mentoring.tests.helpers import (
    ANCHOR,
    INTEGRATOR,
    PUBLIC,
    WEEKDAYS_NINE_TO_FIVE,
    count_rows,
    create_mentor,
    enterprise,
    mentor,
    mentor_body,
    stream_events,
)
from shared.testing.apps import STAFF


async def test_staff_registers_a_mentor_with_availability_and_gets_it_back(staff: httpx.AsyncClient) -> None:
    response = await staff.post(
        "/api/v1/mentors",
        json=mentor_body(
            expertise=["Social value", "insurance", "social-value"], session_lengths_minutes=[60, 30]
        ),
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"] == f"/api/v1/mentors/{created['id']}"
    assert response.headers["etag"] == '"1"'
    assert created["expertise"] == ["social_value", "insurance"]
    assert created["session_lengths_minutes"] == [30, 60]
    assert created["availability"]["weekly"][0] == {"weekday": 0, "start": "09:00", "end": "17:00"}
    fetched = await staff.get(f"/api/v1/mentors/{created['id']}")
    assert fetched.json() == created
    assert fetched.headers["etag"] == '"1"'


async def test_the_same_idempotency_key_registers_one_mentor(app, staff: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "register-ada"}
    first = await staff.post("/api/v1/mentors", json=mentor_body(), headers=headers)
    second = await staff.post("/api/v1/mentors", json=mentor_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert await count_rows(app, "SELECT count(*) FROM mentors") == 1


async def test_bad_mentor_fields_are_each_named_and_nothing_is_written(app, staff: httpx.AsyncClient) -> None:
    response = await staff.post(
        "/api/v1/mentors",
        json=mentor_body(
            email="not-an-address",
            timezone="Europe/Leeds",
            session_lengths_minutes=[7],
            expertise=["fine", "no/slashes"],
            availability={
                "weekly": [
                    {"weekday": 0, "start": "09:00", "end": "12:00"},
                    {"weekday": 0, "start": "11:00", "end": "13:00"},
                    {"weekday": 7, "start": "09:00", "end": "17:00"},
                    {"weekday": 1, "start": "17:00", "end": "09:00"},
                ],
            },
        ),
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    fields = {error["field"] for error in response.json()["errors"]}
    assert {"email", "timezone", "session_lengths_minutes.0", "expertise.1"} <= fields
    assert "availability.weekly.2.weekday" in fields and "availability.weekly.3" in fields
    assert await count_rows(app, "SELECT count(*) FROM mentors") == 0


async def test_overlapping_windows_and_repeated_override_dates_are_named(staff: httpx.AsyncClient) -> None:
    created = await create_mentor(staff)
    response = await staff.put(
        f"/api/v1/mentors/{created['id']}/availability",
        json={
            "timezone": "Europe/London",
            "weekly": [
                {"weekday": 2, "start": "09:00", "end": "12:00"},
                {"weekday": 2, "start": "11:30", "end": "15:00"},
            ],
            "overrides": [
                {"date": "2027-04-02", "windows": []},
                {"date": "2027-04-02", "windows": [{"start": "10:00", "end": "11:00"}]},
            ],
        },
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "weekly.1", "message": "overlaps weekly.0"},
        {"field": "overrides.1.date", "message": "repeats overrides.0"},
    ]


async def test_availability_is_replaced_with_if_match_and_a_stale_etag_is_refused(
    staff: httpx.AsyncClient, nats_url: str
) -> None:
    created = await create_mentor(staff)
    url = f"/api/v1/mentors/{created['id']}/availability"
    rules = {
        "timezone": "America/New_York",
        "weekly": [{"weekday": 0, "start": "08:00", "end": "12:00"}],
        "overrides": [{"date": "2027-04-05", "windows": []}],
        "buffer_before_minutes": 10,
        "buffer_after_minutes": 5,
        "minimum_notice_minutes": 120,
        "max_sessions_per_day": 3,
    }
    changed = await staff.put(url, json=rules, headers={"If-Match": '"1"'})
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] == '"2"'
    assert changed.json()["timezone"] == "America/New_York"
    assert changed.json()["overrides"] == [{"date": "2027-04-05", "windows": []}]
    stale = await staff.put(url, json=rules | {"max_sessions_per_day": 4}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert (await staff.get(url)).json()["max_sessions_per_day"] == 3
    events = await stream_events(nats_url, at_least=2)
    assert [e["type"] for e in events] == [
        "mentoring.mentor.registered.v1",
        "mentoring.availability.changed.v1",
    ]
    assert events[1]["data"] == {
        "mentor_id": created["id"],
        "version": 2,
        "name": "Ada Mentor",
        "organisation": "Leeds Teaching Hospitals",
        "expertise": ["insurance", "legal"],
        "timezone": "America/New_York",
    }
    assert events[1]["subject"] == created["id"]


async def test_a_mentor_changes_their_own_profile_but_not_another_mentors(as_principal, staff) -> None:
    ada = await create_mentor(staff)
    bob = await create_mentor(staff, name="Bob", email="bob@example.org")
    async with as_principal(mentor(ada["id"])) as http:
        own = await http.patch(
            f"/api/v1/mentors/{ada['id']}", json={"expertise": ["bidding"], "max_active_mentees": 4}
        )
        other = await http.patch(f"/api/v1/mentors/{bob['id']}", json={"name": "Robert"})
        other_rules = await http.put(
            f"/api/v1/mentors/{bob['id']}/availability", json={"weekly": WEEKDAYS_NINE_TO_FIVE}
        )
    assert own.status_code == 200, own.text
    assert own.json()["expertise"] == ["bidding"] and own.json()["version"] == 2
    assert other.status_code == 403 and other_rules.status_code == 403
    listed = await staff.get("/api/v1/mentors", params={"expertise": "bidding"})
    assert [m["id"] for m in listed.json()["items"]] == [ada["id"]]


async def test_patch_refuses_nulls_for_required_fields_and_unknown_fields(staff: httpx.AsyncClient) -> None:
    created = await create_mentor(staff)
    response = await staff.patch(f"/api/v1/mentors/{created['id']}", json={"name": None, "colour": "blue"})
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} >= {"colour"}


async def test_mentor_list_pages_with_a_cursor_in_registration_order(staff: httpx.AsyncClient, clock) -> None:
    ids = []
    for n in range(5):
        ids.append((await create_mentor(staff, name=f"Mentor {n}", email=f"m{n}@example.org"))["id"])
        clock.advance(minutes=1)
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await staff.get("/api/v1/mentors", params=params)).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    bad = await staff.get("/api/v1/mentors", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "cursor"


async def test_who_may_register_read_and_change_mentors(as_principal, staff: httpx.AsyncClient) -> None:
    created = await create_mentor(staff)
    url = f"/api/v1/mentors/{created['id']}"
    for principal, register, read, change in [
        (ANCHOR, 403, 200, 403),
        (enterprise(), 403, 200, 403),
        (mentor(uuid.uuid4()), 403, 200, 403),
        (INTEGRATOR, 403, 403, 403),
        (PUBLIC, 401, 401, 401),
    ]:
        async with as_principal(principal) as http:
            assert (await http.post("/api/v1/mentors", json=mentor_body())).status_code == register, principal
            assert (await http.get(url)).status_code == read, principal
            assert (await http.get("/api/v1/mentors")).status_code == read, principal
            assert (await http.patch(url, json={"name": "X"})).status_code == change, principal
            assert (await http.post(f"{url}/calendar-token")).status_code == change, principal
    async with as_principal(STAFF) as http:
        assert (await http.get(f"/api/v1/mentors/{uuid.uuid4()}")).status_code == 404


async def test_a_deactivated_mentor_offers_no_slots_and_takes_no_bookings(
    staff: httpx.AsyncClient, nats_url
) -> None:
    ada = await create_mentor(staff)
    url = f"/api/v1/mentors/{ada['id']}"
    paused = await staff.patch(url, json={"active": False}, headers={"If-Match": '"1"'})
    assert paused.status_code == 200 and paused.json()["active"] is False
    slots = await staff.get(
        f"{url}/slots", params={"start": "2027-03-29", "end": "2027-03-30", "duration_minutes": 60}
    )
    assert slots.json()["items"] == []
    refused = await staff.post(
        "/api/v1/sessions",
        json={
            "mentor_id": ada["id"],
            "enterprise_id": str(uuid.uuid4()),
            "start": "2027-03-29T10:00:00+01:00",
            "duration_minutes": 60,
            "topic": "Insurance",
        },
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "mentor_id"
    assert [
        m["id"] for m in (await staff.get("/api/v1/mentors", params={"active": "false"})).json()["items"]
    ] == [ada["id"]]
    events = await stream_events(nats_url, at_least=2)
    assert events[-1]["type"] == "mentoring.mentor.updated.v1" and events[-1]["data"]["version"] == 2
