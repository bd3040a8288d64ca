"""Crafted cursors and numbers at the edges on demand's lists and creates: a 4xx problem naming
the field, never a 500."""

from __future__ import annotations

import base64
import json
import uuid

from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.demand.tests.conftest import anchor_principal, line_body
from shared.testing.apps import STAFF, client


def b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


CRAFTED = [
    b64([None, None]),
    b64(["abc"]),
    b64(["2027-01-01", {}]),
    b64([1, 2, 3]),
    b64([2**40]),
    "x" * 5000,
    "%%%",
]
cursors = st.one_of(
    st.sampled_from(CRAFTED),
    st.text(max_size=60),
    st.builds(
        b64, st.lists(st.none() | st.integers() | st.text(max_size=30) | st.lists(st.none()), max_size=3)
    ),
)
numbers = st.one_of(st.sampled_from([2**63, 2**63 - 1, -(2**63) - 1, 10**13 + 1, -1]), st.integers())
EDGES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@EDGES
@given(cursor=cursors, spend=numbers, value=numbers)
async def test_crafted_cursors_and_numbers_answer_4xx_naming_the_field(
    app: FastAPI, new_anchor, cursor: str, spend: int, value: int
) -> None:
    anchor = await new_anchor()
    async with client(app, STAFF) as http:
        line_id = (await http.get("/api/v1/demand", params={"limit": 1})).json()["items"]
        paths = ["/api/v1/anchors", "/api/v1/demand"]
        paths += [f"/api/v1/demand/{line_id[0]['id']}/history"] if line_id else []
        for path in paths:
            response = await http.get(path, params={"cursor": cursor})
            assert response.status_code in (200, 400), (path, response.text)
            if response.status_code == 400:
                assert response.json()["errors"][0]["field"] == "cursor"
        created = await http.post(
            "/api/v1/anchors",
            json={
                "name": f"A {uuid.uuid4().hex[:8]}",
                "type": "local_authority",
                "annual_third_party_spend_pence": spend,
            },
        )
        assert created.status_code in (201, 422), created.text
        if created.status_code == 422:
            assert created.json()["errors"][0]["field"] == "annual_third_party_spend_pence"
    async with client(app, anchor_principal(anchor["id"])) as http:
        posted = await http.post("/api/v1/demand", json=line_body(estimated_value_pence=value))
        assert posted.status_code in (201, 422), posted.text
        if posted.status_code == 422:
            assert posted.json()["errors"][0]["field"] == "estimated_value_pence"
