"""Crafted input at the edges (cursors, dates at the ends of the calendar) answers a 4xx problem
naming the field, never a 500."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.mentoring.tests.helpers import book, create_mentor

LISTS = {
    "/api/v1/mentors": {},
    "/api/v1/sessions": {},
    "/api/v1/slots": {"start": "2027-03-29", "end": "2027-03-31", "duration_minutes": 30},
}
EDGE_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def json_values() -> st.SearchStrategy[object]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
    edges = st.sampled_from(
        [
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            "2027-01-01",
            "2027-01-01T00:00:00",
            "\x00",
        ]
    )
    return st.recursive(
        scalars | edges,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=2),
        max_leaves=8,
    )


cursors = st.one_of(
    st.text(max_size=80),
    st.builds(b64, json_values()),
    st.builds(b64, st.lists(json_values(), min_size=2, max_size=2)),
)


def assert_cursor_refused_or_read(response: httpx.Response) -> None:
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize(
    "cursor",
    [
        b64([None, None]),
        b64(["abc"]),
        b64(["2027-01-01", {}]),
        b64(["9999-12-31T23:59:59-14:00", "c7d015b0-e7e2-4c63-8f41-452517a1fca5"]),
        "x" * 5000,
        "%%%",
    ],
)
@pytest.mark.parametrize("path", LISTS)
async def test_a_crafted_cursor_is_a_400_naming_cursor(
    staff: httpx.AsyncClient, path: str, cursor: str
) -> None:
    response = await staff.get(path, params=LISTS[path] | {"cursor": cursor})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "cursor"


@EDGE_SETTINGS
@given(cursor=cursors)
async def test_any_cursor_on_any_list_is_read_or_refused(staff: httpx.AsyncClient, cursor: str) -> None:
    for path, params in LISTS.items():
        assert_cursor_refused_or_read(await staff.get(path, params=params | {"cursor": cursor}))


@pytest.mark.parametrize(("start", "end"), [("9999-12-30", "9999-12-31"), ("0001-01-01", "0001-01-02")])
async def test_slots_at_the_ends_of_the_calendar_are_a_422_naming_the_bound(
    staff: httpx.AsyncClient, start: str, end: str
) -> None:
    mentor = await create_mentor(staff)
    response = await staff.get(
        f"/api/v1/mentors/{mentor['id']}/slots", params={"start": start, "end": end, "duration_minutes": 30}
    )
    assert response.status_code == 422, response.text
    assert {e["field"] for e in response.json()["errors"]} & {"start", "end"}


@pytest.mark.parametrize("start", ["9999-12-31T10:00:00+00:00", "0001-01-01T10:00:00+00:00"])
async def test_a_booking_at_the_ends_of_the_calendar_is_a_422_naming_start(
    staff: httpx.AsyncClient, start: str
) -> None:
    mentor = await create_mentor(staff)
    response = await book(staff, mentor["id"], uuid.uuid4(), datetime.fromisoformat(start))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["start"]


@EDGE_SETTINGS
@given(
    start=st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.sampled_from([UTC]),
    ),
    minutes=st.sampled_from([30, 60, 0, -30, 10**9]),
)
async def test_any_booking_time_is_booked_or_refused_with_a_4xx(
    staff: httpx.AsyncClient, start: datetime, minutes: int
) -> None:
    mentors = (await staff.get("/api/v1/mentors", params={"limit": 1})).json()["items"]
    mentor = mentors[0] if mentors else await create_mentor(staff)
    response = await book(staff, mentor["id"], uuid.uuid4(), start, minutes)
    assert response.status_code in (201, 409, 422), response.text
