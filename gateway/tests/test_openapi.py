"""One OpenAPI document, generated from the services' own documents and the gateway's routes."""

from __future__ import annotations

import re
from typing import Any

import httpx

from gateway.openapi import merge_documents
from gateway.routes import PUBLIC_ROUTES
from gateway.settings import GatewaySettings
from gateway.tests.conftest import GatewayFactory, Process, System, client_of, free_tcp_port, wait_until
from shared.principal import Principal, PrincipalAuth


def template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in refs(item)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def service_document(paths: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "s", "version": "1"}, "paths": paths,
            "components": {"schemas": schemas}}  # fmt: skip


def get_op(ref: str, status: str = "200") -> dict[str, Any]:
    return {
        "get": {
            "responses": {
                status: {"description": "ok", "content": {"application/json": {"schema": {"$ref": ref}}}},
                "422": {
                    "description": "Validation Error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
                    },
                },
            }
        }
    }


VALIDATION = {"HTTPValidationError": {"type": "object", "properties": {"detail": {"type": "array"}}}}


def test_schemas_of_the_same_name_are_kept_apart_and_refs_follow() -> None:
    enterprises = service_document(
        {"/api/v1/enterprises/{id}": get_op("#/components/schemas/Item")},
        {"Item": {"type": "object", "properties": {"name": {"type": "string"}}}, **VALIDATION},
    )
    demand = service_document(
        {"/api/v1/demand/{id}": get_op("#/components/schemas/Item")},
        {"Item": {"type": "object", "properties": {"title": {"type": "string"}}}, **VALIDATION},
    )
    merged = merge_documents(
        {"paths": {}}, {"enterprises": enterprises, "demand": demand}, GatewaySettings(), []
    )
    schemas = merged["components"]["schemas"]
    ent = merged["paths"]["/api/v1/enterprises/{id}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]
    dem = merged["paths"]["/api/v1/demand/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert resolve(merged, ent["schema"]["$ref"])["properties"].keys() == {"name"}
    assert resolve(merged, dem["schema"]["$ref"])["properties"].keys() == {"title"}
    assert ent["schema"]["$ref"] != dem["schema"]["$ref"]
    assert "HTTPValidationError" in schemas  # identical in both: kept once


def test_only_the_paths_the_route_table_sends_to_a_service_are_taken_from_it() -> None:
    rogue = service_document(
        {
            "/api/v1/demand": get_op("#/components/schemas/X"),
            "/api/v1/me": get_op("#/components/schemas/X"),  # the gateway's, not demand's
            "/asyncapi.json": get_op("#/components/schemas/X"),  # internal, not public
        },
        {"X": {"type": "object"}},
    )
    merged = merge_documents({"paths": {}}, {"demand": rogue}, GatewaySettings(), [])
    assert set(merged["paths"]) == {"/api/v1/demand"}


def test_every_operation_states_its_errors_as_problem_json_and_its_security() -> None:
    document = service_document(
        {
            "/api/v1/demand/{id}": {
                **get_op("#/components/schemas/X"),
                "patch": {"requestBody": {}, "responses": {}},
            },
            "/api/v1/mentors/{id}/calendar.ics": get_op("#/components/schemas/X"),
        },
        {"X": {"type": "object"}, **VALIDATION},
    )
    merged = merge_documents(
        {"paths": {}}, {"demand": document, "mentoring": document}, GatewaySettings(), []
    )
    get = merged["paths"]["/api/v1/demand/{id}"]["get"]
    assert set(get["responses"]) >= {"200", "400", "401", "403", "404", "422", "429", "502", "503", "504"}
    assert resolve(merged, get["responses"]["422"]["content"]["application/problem+json"]["schema"]["$ref"])
    patch = merged["paths"]["/api/v1/demand/{id}"]["patch"]
    assert {"412", "413"} <= set(patch["responses"])
    assert merged["security"] == [{"apiKey": []}]
    assert merged["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    feed = merged["paths"]["/api/v1/mentors/{id}/calendar.ics"]["get"]
    assert {} in feed["security"]


def test_oidc_settings_add_an_openid_connect_scheme(tmp_path) -> None:
    settings = GatewaySettings(
        oidc_jwks_file=tmp_path / "k.json", oidc_issuer="https://id.example/", oidc_audience=["a"]
    )
    merged = merge_documents({"paths": {}}, {}, settings, ["demand"])
    scheme = merged["components"]["securitySchemes"]["oidc"]
    assert scheme == {
        "type": "openIdConnect",
        "openIdConnectUrl": "https://id.example/.well-known/openid-configuration",
    }
    assert {"oidc": []} in merged["security"]
    assert merged["info"]["x-seedbed-unavailable-services"] == ["demand"]


async def test_the_document_covers_every_route_the_services_serve(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.url) as http:
        document = (await http.get("/openapi.json")).json()
        again = (await http.get("/api/v1/openapi.json")).json()
        docs = await http.get("/docs")
    assert document == again
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert "x-seedbed-unavailable-services" not in document["info"]
    documented = {(m.upper(), template(p)) for p, item in document["paths"].items() for m in item}
    auth = PrincipalAuth(system.secret.encode(), Principal(role="staff", actor="test"))
    async with httpx.AsyncClient(auth=auth) as http:
        for process in system.services.values():
            own = (await http.get(process.url + "/openapi.json")).json()
            for path, item in own["paths"].items():
                if path.startswith("/api/v1/"):
                    for method in item:
                        assert (method.upper(), template(path)) in documented, f"{method} {path}"
    for ref in set(refs(document)):
        assert resolve(document, ref) is not None, ref
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path not in ("/healthz", "/readyz"):
                assert "401" in operation["responses"], f"{method} {path}"


def test_every_route_of_the_contract_is_documented(system: System) -> None:
    document = httpx.get(system.url + "/openapi.json").json()
    documented = {(m.upper(), template(p)) for p, item in document["paths"].items() for m in item}
    missing = [
        f"{route.method} {route.path} ({route.owner})"
        for route in PUBLIC_ROUTES
        if (route.method, template(route.path)) not in documented
    ]
    assert not missing, missing


async def test_a_service_down_at_start_is_reported_then_merged_once_it_answers(
    system: System, gateway_over: GatewayFactory, tmp_path
) -> None:
    port = free_tcp_port()
    upstreams = system.upstreams() | {"demand": f"http://127.0.0.1:{port}"}  # nothing listens there yet
    demand = system.services["demand"]
    late = Process("demand-late", demand.app, port, demand.env, tmp_path / "demand-late.log")
    async with gateway_over(upstreams=upstreams) as app, client_of(app, None) as http:
        partial = (await http.get("/openapi.json")).json()
        assert partial["info"]["x-seedbed-unavailable-services"] == ["demand"]
        assert not any(path.startswith("/api/v1/demand") for path in partial["paths"])
        late.start()
        try:
            late.wait_ready("/readyz")

            async def merged() -> bool:
                document = (await http.get("/openapi.json")).json()
                return "/api/v1/demand" in document["paths"]

            await wait_until(merged, timeout=10, interval=0.3)
            complete = (await http.get("/openapi.json")).json()
        finally:
            late.stop()
    assert "x-seedbed-unavailable-services" not in complete["info"]
