"""Slot search through the API: one mentor, several mentors at once, in each mentor's own zone."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx

from services.mentoring.tests.helpers import book, create_mentor, london, slot_starts

SPRING = {"start": "2027-03-26", "end": "2027-03-30", "duration_minutes": 60}


async def test_slots_show_nine_local_with_the_offset_of_each_side_of_the_spring_change(
    staff: httpx.AsyncClient,
) -> None:
    ada = await create_mentor(staff)
    response = await staff.get(f"/api/v1/mentors/{ada['id']}/slots", params=SPRING)
    body = response.json()
    assert body["timezone"] == "Europe/London" and body["duration_minutes"] == 60
    starts = slot_starts(response)
    assert starts[0] == "2027-03-26T09:00:00+00:00" and starts[14] == "2027-03-26T16:00:00+00:00"
    assert starts[15] == "2027-03-29T09:00:00+01:00" and starts[-1] == "2027-03-29T16:00:00+01:00"
    assert body["items"][15]["end"] == "2027-03-29T10:00:00+01:00"


async def test_slots_on_the_autumn_change_with_a_window_over_the_repeated_hour(
    staff: httpx.AsyncClient,
) -> None:
    ada = await create_mentor(
        staff,
        availability={
            "weekly": [{"weekday": 6, "start": "00:00", "end": "03:00"}],
            "booking_horizon_days": 365,
        },
    )
    response = await staff.get(
        f"/api/v1/mentors/{ada['id']}/slots",
        params={"start": "2027-10-31", "end": "2027-11-01", "duration_minutes": 60},
    )
    assert slot_starts(response) == [
        "2027-10-31T00:00:00+01:00",
        "2027-10-31T00:30:00+01:00",
        "2027-10-31T01:00:00+01:00",
        "2027-10-31T01:30:00+01:00",
        "2027-10-31T01:00:00+00:00",
        "2027-10-31T01:30:00+00:00",
        "2027-10-31T02:00:00+00:00",
    ]


async def test_a_booked_session_and_its_buffers_leave_the_slot_list(staff: httpx.AsyncClient) -> None:
    ada = await create_mentor(
        staff,
        availability={"buffer_before_minutes": 30, "buffer_after_minutes": 30, "slot_interval_minutes": 30},
    )
    booked = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 12))
    assert booked.status_code == 201, booked.text
    starts = slot_starts(
        await staff.get(
            f"/api/v1/mentors/{ada['id']}/slots",
            params={
                "start": "2027-03-29T09:00:00+01:00",
                "end": "2027-03-29T17:00:00+01:00",
                "duration_minutes": 60,
            },
        )
    )
    times = [s[11:16] for s in starts]
    # 12:00-13:00 holds 11:30-13:30; a session needs its own half hour on either side too.
    assert times == ["09:00", "09:30", "10:00", "14:00", "14:30", "15:00", "15:30", "16:00"]


async def test_a_session_is_offered_and_booked_across_windows_that_touch(staff: httpx.AsyncClient) -> None:
    # Friday evening and Saturday's small hours, set as two windows that meet at midnight.
    ada = await create_mentor(
        staff,
        availability={
            "weekly": [
                {"weekday": 4, "start": "20:00", "end": "24:00"},
                {"weekday": 5, "start": "00:00", "end": "02:00"},
            ]
        },
    )
    response = await staff.get(
        f"/api/v1/mentors/{ada['id']}/slots",
        params={"start": "2027-03-26", "end": "2027-03-27", "duration_minutes": 60},
    )
    assert slot_starts(response)[-2:] == ["2027-03-26T23:00:00+00:00", "2027-03-26T23:30:00+00:00"]
    booked = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 26, 23, 30))
    assert booked.status_code == 201, booked.text
    assert booked.json()["end"] == "2027-03-27T00:30:00+00:00"


async def test_slots_of_every_mentor_with_an_expertise_in_their_own_zones(staff: httpx.AsyncClient) -> None:
    london_mentor = await create_mentor(staff, expertise=["insurance"])
    new_york = await create_mentor(
        staff,
        name="Nia",
        email="nia@example.org",
        expertise=["insurance", "bidding"],
        timezone="America/New_York",
        availability={
            "timezone": "America/New_York",
            "weekly": [{"weekday": 0, "start": "09:00", "end": "10:00"}],
        },
    )
    await create_mentor(staff, name="Lee", email="lee@example.org", expertise=["legal"])
    response = await staff.get(
        "/api/v1/slots",
        params={"expertise": "insurance", "start": "2027-03-29", "end": "2027-03-30", "duration_minutes": 60},
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert {item["mentor_id"] for item in items} == {london_mentor["id"], new_york["id"]}
    nia = [item for item in items if item["mentor_id"] == new_york["id"]]
    # 29 March: New York is already on summer time (-04:00) while London changed the day before.
    assert [(i["start"], i["timezone"]) for i in nia] == [("2027-03-29T09:00:00-04:00", "America/New_York")]
    assert len(items) == 15 + 1
    instants = [datetime.fromisoformat(item["start"]) for item in items]
    assert instants == sorted(instants)  # soonest first, whoever the mentor
    keys = [(instant, item["mentor_id"]) for instant, item in zip(instants, items, strict=True)]
    assert keys == sorted(keys)  # a tie (13:00 UTC is 14:00 in London and 09:00 in New York) by mentor id


async def test_slots_of_several_mentors_page_with_a_cursor(staff: httpx.AsyncClient) -> None:
    for n in range(3):
        await create_mentor(staff, name=f"Mentor {n}", email=f"m{n}@example.org")
    params = {"start": "2027-03-29", "end": "2027-03-31", "duration_minutes": 30}
    everything = (await staff.get("/api/v1/slots", params=params | {"limit": 500})).json()
    assert everything["next_cursor"] is None and len(everything["items"]) == 3 * 2 * 16
    paged, cursor = [], None
    while True:
        page = (
            await staff.get(
                "/api/v1/slots", params=params | {"limit": 7} | ({"cursor": cursor} if cursor else {})
            )
        ).json()
        paged += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == everything["items"]


async def test_slot_search_names_each_bad_parameter(staff: httpx.AsyncClient) -> None:
    ada = await create_mentor(staff)
    url = f"/api/v1/mentors/{ada['id']}/slots"
    cases = [
        ({"start": "2027-03-29T09:00:00", "end": "2027-03-30", "duration_minutes": 60}, "start"),
        ({"start": "2027-03-29", "end": "2027-03-28", "duration_minutes": 60}, "end"),
        ({"start": "2027-01-01", "end": "2027-06-01", "duration_minutes": 60}, "end"),
        ({"start": "2027-03-29", "end": "2027-03-30", "duration_minutes": 45}, "duration_minutes"),
        ({"start": "2027-03-29", "end": "2027-03-30"}, "duration_minutes"),
    ]
    for params, field in cases:
        response = await staff.get(url, params=params)
        assert response.status_code == 422, (params, response.text)
        assert field in [e["field"] for e in response.json()["errors"]], (params, response.json())


async def test_an_unencoded_plus_in_the_offset_is_understood(staff: httpx.AsyncClient) -> None:
    ada = await create_mentor(staff)
    # A client that forgets to encode "+" sends a space; the time is still unambiguous.
    response = await staff.get(
        f"/api/v1/mentors/{ada['id']}/slots?start=2027-03-29T15:00:00+01:00&end=2027-03-29T17:00:00%2B01:00"
        "&duration_minutes=60"
    )
    assert slot_starts(response) == [
        "2027-03-29T15:00:00+01:00",
        "2027-03-29T15:30:00+01:00",
        "2027-03-29T16:00:00+01:00",
    ]
