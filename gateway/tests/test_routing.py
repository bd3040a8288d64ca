"""Routing through the whole running system: each path reaches its owning service, a stopped
service gives 503 problem+json naming it while the rest keep working, a frozen one gives 504."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest

from gateway.routes import PUBLIC_ROUTES, SERVICES, owner_of
from gateway.tests.conftest import System, wait_until
from shared.principal import Principal, PrincipalAuth

# A parameter-less GET of each service (from its own document).
PLAIN_GETS = [r for r in PUBLIC_ROUTES if r.method == "GET" and "{" not in r.path and r.owner in SERVICES]


async def service_paths(system: System) -> dict[str, set[str]]:
    """The paths each running service documents (its own /openapi.json, signed as staff)."""
    auth = PrincipalAuth(system.secret.encode(), Principal(role="staff", actor="test"))
    found: dict[str, set[str]] = {}
    async with httpx.AsyncClient(auth=auth) as http:
        for name, process in system.services.items():
            document = (await http.get(process.url + "/openapi.json")).json()
            found[name] = set(document.get("paths", {}))
    return found


async def a_plain_get(system: System, service: str) -> str:
    paths = (await service_paths(system))[service]
    for route in PLAIN_GETS:
        if route.owner == service and route.path in paths:
            return route.path
    pytest.fail(f"the {service} service has no parameter-less GET route of PLAIN_GETS in its document")


def test_route_table_sends_every_public_path_to_its_owner() -> None:
    expected = {
        "/api/v1/enterprises": "enterprises",
        "/api/v1/enterprises/1": "enterprises",
        "/api/v1/enterprises/1/readiness": "enterprises",
        "/api/v1/enterprises/1/milestones/legal_entity": "enterprises",
        "/api/v1/enterprises/1/matches": "demand",
        "/api/v1/enterprises/1/dashboard": "gateway",
        "/api/v1/cohorts": "enterprises",
        "/api/v1/milestone-definitions": "enterprises",
        "/api/v1/anchors/1": "demand",
        "/api/v1/demand/imports/template.csv": "demand",
        "/api/v1/pipeline": "demand",
        "/api/v1/mentors/recommendations": "mentoring",
        "/api/v1/mentors/1/calendar.ics": "mentoring",
        "/api/v1/slots": "mentoring",
        "/api/v1/sessions/1/no-show": "mentoring",
        "/api/v1/api-keys/1": "gateway",
        "/api/v1/me": "gateway",
        "/api/v1/webhooks/1/deliveries": "gateway",
        "/api/v1/events/stream": "gateway",
        "/api/v1/asyncapi.json": "gateway",
        "/api/v1/unknown": None,
        "/api/v2/enterprises": None,
        "/enterprises": None,
    }
    assert {path: owner_of(path) for path in expected} == expected
    assert all(route.owner in (*SERVICES, "gateway") for route in PUBLIC_ROUTES)


@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_answers_its_paths_through_the_gateway(system: System, service: str) -> None:
    path = await a_plain_get(system, service)
    async with system.client() as http:
        response = await http.get(path, headers={"X-Request-ID": f"route-{service}-1"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == f"route-{service}-1"
    # The service itself saw the request under the same id (its access log line).
    await wait_until(lambda: f"route-{service}-1" in system.services[service].log(), timeout=5)


async def test_unknown_paths_get_404_problem_from_the_gateway(system: System) -> None:
    async with system.client() as http:
        response = await http.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_stopped_service_gives_503_naming_it_and_the_rest_keep_working(system: System) -> None:
    others = {service: await a_plain_get(system, service) for service in SERVICES if service != "demand"}
    system.services["demand"].stop()
    try:
        async with system.client() as http:
            down = [
                await http.get("/api/v1/anchors"),
                await http.get(f"/api/v1/enterprises/{uuid.uuid4()}/matches"),
                await http.post("/api/v1/demand", json={"title": "x"}),
            ]
            working = {service: await http.get(path) for service, path in others.items()}
            ready = await http.get("/readyz")
            started = time.monotonic()
            for _ in range(5):  # known to be down: refused at once, no retry pauses each time
                assert (await http.get("/api/v1/anchors")).status_code == 503
            fast = time.monotonic() - started
    finally:
        system.restart_service("demand")
    for response in down:
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["service"] == "demand"
        assert "demand" in response.json()["detail"]
    assert {service: r.status_code for service, r in working.items()} == dict.fromkeys(others, 200)
    # Degraded, still ready: the gateway serves the other services (taking it out fixes nothing).
    assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
    assert ready.json()["checks"]["demand"] != "ok" and ready.json()["checks"]["enterprises"] == "ok"
    assert fast < 0.25
    # Back up: the pooled connections to the old process are gone; the first request still works.
    async with system.client() as http:
        again = await http.get(f"/api/v1/enterprises/{uuid.uuid4()}/matches")
    assert again.status_code != 503


async def test_a_service_that_stops_answering_gives_504(system: System, gateway_over) -> None:
    path = await a_plain_get(system, "enterprises")
    async with gateway_over(upstreams=system.upstreams(), upstream_timeout_seconds=0.5) as app:
        from gateway.tests.conftest import client_of

        async with client_of(app) as http:
            assert (await http.get(path)).status_code == 200
            system.services["enterprises"].freeze()
            try:
                frozen = await http.get(path)
            finally:
                system.services["enterprises"].thaw()
            thawed = await http.get(path)
    assert frozen.status_code == 504
    assert frozen.json()["service"] == "enterprises"
    assert thawed.status_code == 200


async def test_services_refuse_requests_that_bypass_the_gateway(system: System) -> None:
    for process in system.services.values():
        response = httpx.get(process.url + "/api/v1/enterprises", headers={"Authorization": "Bearer x"})
        assert response.status_code == 401
        assert re.search("gateway|principal", response.json()["detail"])
