"""The enterprise dashboard: four parts fetched concurrently as the caller; a part that is down or
slow is marked unavailable and the answer is still 200; the caller's own rights decide."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from gateway.tests.conftest import GatewayFactory, System, client_of
from gateway.tests.test_authorization_matrix import enterprise_body

PARTS = ("profile", "readiness", "top_matches", "upcoming_sessions")


@pytest.fixture(scope="module")
def enterprises(system: System) -> dict[str, Any]:
    """Two enterprises and keys: staff, the first enterprise, an anchor, a mentor, an integrator."""

    async def make() -> dict[str, Any]:
        async with system.client() as http:
            made = []
            for n in range(2):
                response = await http.post(
                    "/api/v1/enterprises", json=enterprise_body(f"Dashboard {n} {uuid.uuid4()}")
                )
                assert response.status_code == 201, (
                    f"no enterprise: {response.status_code} {response.text[:200]}"
                )
                made.append(response.json()["id"])
        keys = {
            "enterprise": (await system.create_key("enterprise", made[0]))["key"],
            "anchor": (await system.create_key("anchor"))["key"],
            "mentor": (await system.create_key("mentor"))["key"],
            "integrator": (await system.create_key("integrator"))["key"],
        }
        return {"own": made[0], "other": made[1], "keys": keys}

    return asyncio.run(make())


async def test_staff_see_every_part_of_an_enterprise(system: System, enterprises: dict[str, Any]) -> None:
    async with system.client() as http:
        response = await http.get(f"/api/v1/enterprises/{enterprises['own']}/dashboard")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["enterprise_id"] == enterprises["own"]
    assert body["profile"]["status"] == "ok" and body["profile"]["data"]["id"] == enterprises["own"]
    assert body["profile"]["service"] == "enterprises"
    assert body["readiness"]["status"] == "ok" and "score" in body["readiness"]["data"]
    assert body["upcoming_sessions"]["status"] == "ok", body["upcoming_sessions"]
    assert isinstance(body["upcoming_sessions"]["data"]["items"], list)
    assert body["unavailable"] == [part for part in PARTS if body[part]["status"] != "ok"]


@pytest.mark.parametrize(
    ("role", "which", "status"),
    [
        ("enterprise", "own", 200),
        ("enterprise", "other", 404),
        ("anchor", "own", 404),
        ("mentor", "own", 200),
        ("integrator", "own", 403),
    ],
)
async def test_the_callers_own_rights_decide(
    system: System, enterprises: dict[str, Any], role: str, which: str, status: int
) -> None:
    async with system.client(enterprises["keys"][role]) as http:
        response = await http.get(f"/api/v1/enterprises/{enterprises[which]}/dashboard")
    assert response.status_code == status, response.text
    if status != 200:
        assert response.headers["content-type"] == "application/problem+json"
        assert "data" not in response.text


async def test_an_unknown_enterprise_is_404(system: System) -> None:
    async with system.client() as http:
        response = await http.get(f"/api/v1/enterprises/{uuid.uuid4()}/dashboard")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_part_whose_service_is_down_is_unavailable_and_the_rest_answer(
    system: System, enterprises: dict[str, Any], gateway_over: GatewayFactory
) -> None:
    upstreams = system.upstreams() | {"demand": "http://127.0.0.1:9"}  # nothing listens there
    async with gateway_over(upstreams=upstreams) as app, client_of(app) as http:
        response = await http.get(f"/api/v1/enterprises/{enterprises['own']}/dashboard")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["top_matches"]["status"] == "unavailable"
    assert body["top_matches"]["service"] == "demand"
    assert "top_matches" in body["unavailable"]
    assert body["profile"]["status"] == "ok"
    assert body["upcoming_sessions"]["status"] == "ok"


async def test_a_part_that_does_not_answer_in_time_is_unavailable(
    system: System, enterprises: dict[str, Any], gateway_over: GatewayFactory
) -> None:
    async with (
        gateway_over(upstreams=system.upstreams(), dashboard_part_timeout_seconds=0.5) as app,
        client_of(app) as http,
    ):
        system.services["mentoring"].freeze()
        try:  # the answer comes while mentoring is still frozen: it would never come otherwise
            response = await http.get(f"/api/v1/enterprises/{enterprises['own']}/dashboard")
        finally:
            system.services["mentoring"].thaw()
    assert response.status_code == 200
    body = response.json()
    assert body["upcoming_sessions"]["status"] == "unavailable"
    assert "in time" in body["upcoming_sessions"]["detail"]
    assert body["profile"]["status"] == "ok"


async def test_without_a_credential_the_dashboard_is_401(system: System, enterprises: dict[str, Any]) -> None:
    async with system.client() as http:
        response = await http.get(
            f"/api/v1/enterprises/{enterprises['own']}/dashboard", headers={"Authorization": ""}
        )
    assert response.status_code == 401
