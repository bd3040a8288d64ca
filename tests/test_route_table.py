"""The gateway's route table, ACCESS.md and the services' own OpenAPI documents agree.

A route a service serves but the table does not list would be forwarded with no row of
docs/ACCESS.md saying who may call it, and the authorization matrix would never try it.
"""

from __future__ import annotations

import inspect
import re

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from gateway.app import create_app as gateway_app
from gateway.routes import API_PREFIX, PUBLIC_ROUTES, owner_of
from gateway.tests.test_authorization_matrix import RULES
from services.demand.app import create_app as demand_app
from services.enterprises.app import create_app as enterprises_app
from services.mentoring.app import create_app as mentoring_app


def template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


TABLE = {(route.method, template(route.path)): route for route in PUBLIC_ROUTES}


@pytest.mark.parametrize(
    ("owner", "factory"),
    [("enterprises", enterprises_app), ("demand", demand_app), ("mentoring", mentoring_app)],
)
def test_every_route_a_service_serves_is_in_the_table_with_that_owner(owner: str, factory) -> None:
    app: FastAPI = factory()
    served = [
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        if path.startswith(API_PREFIX + "/")
        for method in item
        if method != "parameters"
    ]
    assert served
    unlisted = [f"{m} {p}" for m, p in served if (m, template(p)) not in TABLE]
    assert not unlisted, f"{owner} serves routes the gateway's table does not list: {unlisted}"
    misrouted = [f"{m} {p}" for m, p in served if owner_of(p) != owner]
    assert not misrouted, f"the gateway would send these {owner} routes elsewhere: {misrouted}"


def test_every_route_of_the_table_has_a_row_in_access_md() -> None:
    rows = {(rule.method, template(rule.full_path)) for rule in RULES}
    missing = [f"{m} {p}" for (m, p) in TABLE if (m, p) not in rows]
    assert not missing, f"routes with no row in docs/ACCESS.md: {missing}"


def _sync_calls(dependant, seen: set[int]) -> list[str]:
    out = []
    for dependency in dependant.dependencies:
        call = dependency.call
        if call is not None and id(call) not in seen:
            seen.add(id(call))
            if not (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)):
                out.append(getattr(call, "__qualname__", repr(call)))
        out.extend(_sync_calls(dependency, seen))
    return out


def _api_routes(routes) -> list[APIRoute]:
    """Every APIRoute, also those of included routers (FastAPI may keep an included router whole)."""
    out = []
    for route in routes:
        if isinstance(route, APIRoute):
            out.append(route)
        elif (inner := getattr(route, "original_router", None) or getattr(route, "app", None)) is not None:
            out.extend(_api_routes(getattr(inner, "routes", [])))
    return out


@pytest.mark.parametrize("factory", [enterprises_app, demand_app, mentoring_app, gateway_app])
def test_no_route_or_dependency_runs_in_the_threadpool(factory) -> None:
    """FastAPI runs a plain ``def`` endpoint or dependency in a worker thread: a thread hop on
    every request (measured on booking: about a quarter of its throughput)."""
    app: FastAPI = factory()
    sync = []
    routes = _api_routes(app.routes)
    assert len(routes) > 10
    for route in routes:
        if isinstance(route, APIRoute):
            call = route.endpoint
            if not (inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)):
                sync.append(f"{route.path}: endpoint {getattr(call, '__qualname__', repr(call))}")
            sync.extend(f"{route.path}: {name}" for name in _sync_calls(route.dependant, set()))
    assert not sync, sync
