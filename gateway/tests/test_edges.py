"""Crafted input on the gateway's own lists and creates: a 4xx problem naming the field, never a 500."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tests.conftest import GatewayFactory, client_of

CRAFTED_CURSORS = [
    "not-ours",
    "%%%",
    "x" * 5000,
    *(
        base64.urlsafe_b64encode(json.dumps(value).encode()).decode()
        for value in (
            [None, None],
            ["abc"],
            ["2027-01-01", {}],
            ["9999-12-31T23:59:59-14:00", str(uuid.uuid4())],
        )
    ),
]
cursors = st.one_of(
    st.sampled_from(CRAFTED_CURSORS),
    st.text(max_size=60),
    st.builds(
        lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode(),
        st.lists(
            st.none()
            | st.integers()
            | st.text(max_size=30)
            | st.dictionaries(st.text(max_size=3), st.none()),
            max_size=3,
        ),
    ),
)
expiries = st.one_of(
    st.sampled_from(["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z"]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)


async def test_crafted_cursors_and_expiries_answer_4xx_naming_the_field(gateway_app: GatewayFactory) -> None:
    async with gateway_app() as app, client_of(app) as http:
        webhook = uuid.uuid4()

        @settings(max_examples=60, deadline=None)
        @given(cursor=cursors, expires_at=expiries)
        def probe(cursor: str, expires_at: str) -> None:
            probes.append((cursor, expires_at))

        probes: list[tuple[str, str]] = []
        probe()
        for cursor, expires_at in probes:
            for path in ("/api/v1/api-keys", "/api/v1/webhooks", f"/api/v1/webhooks/{webhook}/deliveries"):
                response = await http.get(path, params={"cursor": cursor})
                assert response.status_code in (200, 400, 404), (path, cursor, response.text)
                if response.status_code == 400:
                    assert response.json()["errors"][0]["field"] == "cursor"
            body = {"role": "staff", "subject_id": None, "name": "edge", "expires_at": expires_at}
            response = await http.post("/api/v1/api-keys", json=body)
            assert response.status_code in (201, 422), (expires_at, response.text)
            if response.status_code == 422:
                assert response.json()["errors"][0]["field"] == "expires_at"


@pytest.mark.parametrize("cursor", CRAFTED_CURSORS)
async def test_a_crafted_cursor_on_the_key_list_is_a_400_naming_cursor(
    gateway_app: GatewayFactory, cursor: str
) -> None:
    async with gateway_app() as app, client_of(app) as http:
        response = await http.get("/api/v1/api-keys", params={"cursor": cursor})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "cursor"
