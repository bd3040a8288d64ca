"""Crafted cursors and numbers at the edges on the enterprises service: a 4xx problem naming the
field, never a 500."""

from __future__ import annotations

import base64
import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.enterprises.tests.conftest import create_enterprise


def b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


CRAFTED = [b64([None, None]), b64(["abc"]), b64(["2027-01-01", {}]), b64([1, "x", 3]), "x" * 5000, "%%%"]
cursors = st.one_of(
    st.sampled_from(CRAFTED),
    st.text(max_size=60),
    st.builds(
        b64, st.lists(st.none() | st.integers() | st.text(max_size=30) | st.lists(st.none()), max_size=3)
    ),
)
numbers = st.one_of(st.sampled_from([2**63, 2**63 - 1, -(2**63) - 1, 10**15 + 1, -1]), st.integers())
EDGES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@EDGES
@given(cursor=cursors, turnover=numbers)
async def test_crafted_cursors_and_numbers_answer_4xx_naming_the_field(
    staff: httpx.AsyncClient, cursor: str, turnover: int
) -> None:
    enterprise = await create_enterprise(staff)
    for path in (
        "/api/v1/enterprises",
        "/api/v1/cohorts",
        "/api/v1/milestone-definitions",
        f"/api/v1/enterprises/{enterprise['id']}/history",
        f"/api/v1/enterprises/{enterprise['id']}/bids",
        "/api/v1/bids",
    ):
        response = await staff.get(path, params={"cursor": cursor})
        assert response.status_code in (200, 400), (path, response.text)
        if response.status_code == 400:
            assert response.json()["errors"][0]["field"] == "cursor"
    patched = await staff.patch(f"/api/v1/enterprises/{enterprise['id']}", json={"turnover_pence": turnover})
    assert patched.status_code in (200, 422), patched.text
    if patched.status_code == 422:
        assert patched.json()["errors"][0]["field"] == "turnover_pence"
