"""What every service must do the same way, written once: each service's ``tests/test_health.py``
subclasses :class:`ServiceBasics` (pytest collects the subclass, named ``Test...``, with its
``app`` fixture of that service)."""

from __future__ import annotations

from fastapi import FastAPI

from shared.testing.apps import STAFF, client


class ServiceBasics:
    """The service is up, ready, and refuses requests that did not come through the gateway."""

    async def test_healthz_and_readyz_answer(self, app: FastAPI) -> None:
        async with client(app, None) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["database"] == "ok"

    async def test_request_without_principal_header_is_refused(self, app: FastAPI) -> None:
        async with client(app, None) as http:
            response = await http.get("/asyncapi.json")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"

    async def test_request_with_forged_principal_header_is_refused(self, app: FastAPI) -> None:
        async with client(app, STAFF, secret="not-the-secret-the-gateway-uses-000000") as http:
            response = await http.get("/asyncapi.json")
        assert response.status_code == 401

    async def test_signed_request_is_accepted(self, app: FastAPI) -> None:
        async with client(app, STAFF) as http:
            response = await http.get("/asyncapi.json")
        assert response.status_code == 200
        assert response.json()["asyncapi"] == "3.0.0"
