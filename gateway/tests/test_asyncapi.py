"""``GET /api/v1/asyncapi.json``: the services' AsyncAPI documents merged into one, cut to what
each role may see, served in part while a service is down."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.asyncapi import for_role, merge_asyncapi
from gateway.settings import GatewaySettings
from gateway.tests.conftest import GatewayFactory, System, client_of
from shared.principal import Principal, PrincipalAuth

PATH = "/api/v1/asyncapi.json"


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


def addresses(document: dict[str, Any]) -> set[str]:
    return {channel["address"] for channel in document["channels"].values()}


async def service_documents(system: System) -> dict[str, dict[str, Any]]:
    auth = PrincipalAuth(system.secret.encode(), Principal(role="staff", actor="test"))
    async with httpx.AsyncClient(auth=auth) as http:
        return {
            name: (await http.get(process.url + "/asyncapi.json")).json()
            for name, process in system.services.items()
        }


async def test_staff_get_every_event_type_of_every_service_with_resolvable_schemas(system: System) -> None:
    own = await service_documents(system)
    async with system.client() as http:
        document = (await http.get(PATH)).json()
    assert document["asyncapi"].startswith("3.")
    assert "x-seedbed-unavailable-services" not in document["info"]
    assert addresses(document) == set().union(*(addresses(d) for d in own.values()))
    assert {a.split(".")[0] for a in addresses(document)} == {"enterprises", "demand", "mentoring"}
    nats_server = document["servers"]["nats"]
    assert nats_server["protocol"] == "nats" and "@" not in nats_server["host"]
    for ref in set(refs(document)):
        assert resolve(document, ref) is not None, ref
    item = document["channels"]["demand_item_published_v1"]
    assert item["x-seedbed-stream"] == "DEMAND" and item["x-seedbed-visible-to"] == [
        "staff",
        "anchor",
        "integrator",
    ]
    message = resolve(document, item["messages"]["demand_item_published_v1"]["$ref"])
    data = resolve(document, message["payload"]["properties"]["data"]["$ref"])
    assert "demand_id" in data["properties"]
    # A stale line may be a draft or aggregate-only: its own anchor (and staff) only.
    assert document["channels"]["demand_item_stale_v1"]["x-seedbed-visible-to"] == ["staff", "anchor"]
    catalogue = document["channels"]["enterprises_milestone_definition_published_v1"]
    assert catalogue["x-seedbed-stream"] == "ENTERPRISES" and catalogue["x-seedbed-visible-to"] == ["staff"]


async def test_other_roles_get_the_event_types_they_may_see_and_no_more(system: System) -> None:
    integrator = (await system.create_key("integrator"))["key"]
    anchor = (await system.create_key("anchor"))["key"]
    mentor = (await system.create_key("mentor"))["key"]
    async with system.client(integrator) as http:
        for_integrator = (await http.get(PATH)).json()
    async with system.client(anchor) as http:
        for_anchor = (await http.get(PATH)).json()
    async with system.client(mentor) as http:
        refused = await http.get(PATH)
    assert addresses(for_integrator) and all(a.startswith("demand.") for a in addresses(for_integrator))
    assert "demand.item.stale.v1" not in addresses(for_integrator)
    assert "demand.item.stale.v1" in addresses(for_anchor)
    anchor_services = {a.split(".")[0] for a in addresses(for_anchor)}
    assert anchor_services == {"demand", "mentoring"}
    assert not any(".session." in a for a in addresses(for_anchor))
    for document in (for_integrator, for_anchor):
        for ref in set(refs(document)):
            assert resolve(document, ref) is not None, ref
        assert all(op["channel"]["$ref"].removeprefix("#/channels/") in document["channels"]
                   for op in document["operations"].values())  # fmt: skip
    # No schema of an event the role may not see is left behind.
    assert not any("session" in name.lower() for name in for_anchor["components"]["schemas"])
    assert refused.status_code == 403


async def test_a_service_down_is_named_and_the_rest_is_served(
    system: System, gateway_over: GatewayFactory
) -> None:
    upstreams = system.upstreams() | {"mentoring": "http://127.0.0.1:9"}
    async with gateway_over(upstreams=upstreams) as app, client_of(app) as http:
        document = (await http.get(PATH)).json()
    assert document["info"]["x-seedbed-unavailable-services"] == ["mentoring"]
    assert {a.split(".")[0] for a in addresses(document)} == {"enterprises", "demand"}


def test_schemas_of_the_same_name_in_two_services_are_kept_apart() -> None:
    def document(service: str, field: str) -> dict[str, Any]:
        key = f"{service}_item_made_v1"
        return {
            "asyncapi": "3.0.0",
            "channels": {key: {"address": f"{service}.item.made.v1",
                               "messages": {key: {"$ref": f"#/components/messages/{key}"}}}},
            "operations": {f"receive_{key}": {"action": "receive", "channel": {"$ref": f"#/channels/{key}"}}},
            "components": {
                "messages": {key: {"payload": {"$ref": "#/components/schemas/Lot"}}},
                "schemas": {"Lot": {"type": "object", "properties": {field: {"type": "string"}}}},
            },
        }  # fmt: skip

    merged = merge_asyncapi(
        {"demand": document("demand", "title"), "mentoring": document("mentoring", "topic")},
        GatewaySettings(nats_url="nats://user:secret@nats.internal:4222"),
        [],
    )
    demand = resolve(merged, merged["components"]["messages"]["demand_item_made_v1"]["payload"]["$ref"])
    mentoring = resolve(merged, merged["components"]["messages"]["mentoring_item_made_v1"]["payload"]["$ref"])
    assert set(demand["properties"]) == {"title"} and set(mentoring["properties"]) == {"topic"}
    assert merged["servers"]["nats"]["host"] == "nats.internal:4222"  # never the credentials
    integrator = for_role(merged, "integrator")
    assert set(integrator["channels"]) == {"demand_item_made_v1"}
    assert list(integrator["components"]["schemas"]) == ["Lot"]
