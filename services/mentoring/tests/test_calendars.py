"""Calendars, read back with the icalendar parser: invitations keep their UID through a reschedule,
a cancellation is METHOD:CANCEL with a higher SEQUENCE, and a mentor's feed is reached through a
secret URL that rotation revokes at once."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import httpx
from icalendar import Calendar

from services.mentoring.tests.helpers import (
    ANCHOR,
    PUBLIC,
    book,
    count_rows,
    create_mentor,
    enterprise,
    london,
    mentor,
)


def parse(response: httpx.Response) -> tuple[Calendar, list]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    calendar = Calendar.from_ical(response.content)
    return calendar, list(calendar.walk("VEVENT"))


async def test_an_invitation_keeps_its_uid_through_reschedule_and_cancel_with_growing_sequence(
    staff: httpx.AsyncClient,
) -> None:
    ada = await create_mentor(staff)
    session = (
        await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 26, 10), topic="Bid writing")
    ).json()
    url = f"/api/v1/sessions/{session['id']}/ics"

    calendar, [event] = parse(await staff.get(url))
    assert calendar["METHOD"] == "REQUEST"
    uid = str(event["UID"])
    assert event["SEQUENCE"] == 0
    assert event.decoded("DTSTART") == london(2027, 3, 26, 10)
    assert event.decoded("DTEND") == london(2027, 3, 26, 11)
    assert event["DTSTART"].params["TZID"] == "Europe/London"
    assert str(event["SUMMARY"]) == "Mentoring: Bid writing"
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["ORGANIZER"]) == "mailto:ada@example.org"
    assert [c["TZID"] for c in calendar.walk("VTIMEZONE")] == ["Europe/London"]

    # Moved across the clock change: 10:00 GMT on Friday to 10:00 BST on Monday.
    await staff.post(
        f"/api/v1/sessions/{session['id']}/reschedule", json={"start": "2027-03-29T10:00:00+01:00"}
    )
    calendar, [event] = parse(await staff.get(url))
    assert str(event["UID"]) == uid and event["SEQUENCE"] == 1
    assert event.decoded("DTSTART") == london(2027, 3, 29, 10)
    assert event.decoded("DTSTART").utcoffset().total_seconds() == 3600
    assert calendar["METHOD"] == "REQUEST"

    await staff.post(f"/api/v1/sessions/{session['id']}/cancel", json={"reason": "Mentor unwell"})
    response = await staff.get(url)
    assert "method=CANCEL" in response.headers["content-type"]
    calendar, [event] = parse(response)
    assert calendar["METHOD"] == "CANCEL"
    assert str(event["UID"]) == uid and event["SEQUENCE"] == 2
    assert str(event["STATUS"]) == "CANCELLED"
    assert "Mentor unwell" in str(event["DESCRIPTION"])


async def test_the_feed_is_reached_with_the_secret_url_and_rotation_revokes_the_old_one(
    app, as_principal, staff: httpx.AsyncClient
) -> None:
    ada = await create_mentor(staff)
    firm = uuid.uuid4()
    booked = (await book(staff, ada["id"], firm, london(2027, 3, 29, 10))).json()
    cancelled = (await book(staff, ada["id"], firm, london(2027, 3, 30, 10))).json()
    await staff.post(f"/api/v1/sessions/{cancelled['id']}/cancel", json={"reason": "x"})
    await book(
        staff,
        (await create_mentor(staff, name="Bob", email="b@example.org"))["id"],
        firm,
        london(2027, 3, 31, 9),
    )

    async with as_principal(mentor(ada["id"])) as http:
        issued = await http.post(f"/api/v1/mentors/{ada['id']}/calendar-token")
    assert issued.status_code == 200, issued.text
    assert issued.headers["cache-control"] == "no-store"
    feed_path = issued.json()["feed_path"]
    token = parse_qs(urlsplit(feed_path).query)["token"][0]
    assert feed_path.startswith(f"/api/v1/mentors/{ada['id']}/calendar.ics?token=")
    # Only a hash of the token is kept.
    assert await count_rows(app, "SELECT count(*) FROM mentors WHERE calendar_token_hash = :h",
                            h=hashlib.sha256(token.encode()).hexdigest()) == 1  # fmt: skip
    assert await count_rows(app, "SELECT count(*) FROM mentors WHERE calendar_token_hash = :t", t=token) == 0

    async with as_principal(PUBLIC) as http:
        calendar, events = parse(await http.get(feed_path))
        assert calendar["METHOD"] == "PUBLISH"
        by_uid = {str(e["UID"]): e for e in events}
        assert set(by_uid) == {f"{booked['id']}@mentoring.seedbed", f"{cancelled['id']}@mentoring.seedbed"}
        assert str(by_uid[f"{cancelled['id']}@mentoring.seedbed"]["STATUS"]) == "CANCELLED"
        assert by_uid[f"{booked['id']}@mentoring.seedbed"].decoded("DTSTART") == london(2027, 3, 29, 10)

        assert (await http.get(f"/api/v1/mentors/{ada['id']}/calendar.ics")).status_code == 403
        wrong = await http.get(f"/api/v1/mentors/{ada['id']}/calendar.ics?token=guess")
        assert wrong.status_code == 403
        assert (
            await http.get(f"/api/v1/mentors/{uuid.uuid4()}/calendar.ics?token={token}")
        ).status_code == 403
        assert (await http.get(f"/api/v1/sessions/{booked['id']}")).status_code == 401
        assert (await http.get("/api/v1/mentors")).status_code == 401

    rotated = (await staff.post(f"/api/v1/mentors/{ada['id']}/calendar-token")).json()["feed_path"]
    async with as_principal(PUBLIC) as http:
        assert (await http.get(feed_path)).status_code == 403  # the old URL stopped at once
        assert (await http.get(rotated)).status_code == 200
        assert (await staff.delete(f"/api/v1/mentors/{ada['id']}/calendar-token")).status_code == 204
        assert (await http.get(rotated)).status_code == 403


async def test_the_mentor_and_staff_read_the_feed_without_a_token_and_others_may_not(
    as_principal, staff: httpx.AsyncClient
) -> None:
    ada = await create_mentor(staff)
    url = f"/api/v1/mentors/{ada['id']}/calendar.ics"
    assert (await staff.get(url)).status_code == 200
    async with as_principal(mentor(ada["id"])) as http:
        _, events = parse(await http.get(url))
        assert events == []
    for principal in (mentor(uuid.uuid4()), enterprise(), ANCHOR):
        async with as_principal(principal) as http:
            assert (await http.get(url)).status_code == 403, principal


async def test_invitation_times_on_the_repeated_hour_keep_their_offsets(
    staff: httpx.AsyncClient, clock
) -> None:
    ada = await create_mentor(
        staff,
        availability={
            "weekly": [{"weekday": 6, "start": "00:00", "end": "03:00"}],
            "booking_horizon_days": 365,
        },
    )
    # The second 01:00 of 31 October 2027 (GMT, UTC+0): after the clocks went back.
    start = datetime.fromisoformat("2027-10-31T01:00:00+00:00")
    session = await book(staff, ada["id"], uuid.uuid4(), start)
    assert session.status_code == 201, session.text
    assert session.json()["start"] == "2027-10-31T01:00:00+00:00"
    _, [event] = parse(await staff.get(f"/api/v1/sessions/{session.json()['id']}/ics"))
    assert event.decoded("DTSTART") == start
    assert event.decoded("DTEND") == datetime.fromisoformat("2027-10-31T02:00:00+00:00")
