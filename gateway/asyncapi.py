"""``GET /api/v1/asyncapi.json``: one AsyncAPI 3.0 document of every event, from the services'.

Each service generates its own document from its payload models (``shared.asyncapi``) at
``GET /asyncapi.json`` (internal; fetched signed as staff, actor ``gateway``, as
``gateway.openapi`` fetches the OpenAPI documents). The gateway merges them (schemas of the
same name kept apart by a service prefix), adds the NATS server and says where else the
events arrive (``SEEDBED_EVENTS``, the SSE stream, webhooks). The documents are fetched at
start, retried while a service is down (what is there is served meanwhile, with the
missing services named in ``info.x-seedbed-unavailable-services``) and refreshed
periodically. Each role is shown the event types it may see (``gateway.visibility``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.documents import ServiceDocuments
from gateway.event_stream import EVENTS_STREAM
from gateway.openapi import merge_components
from gateway.routes import SERVICES
from gateway.settings import GatewaySettings
from gateway.visibility import STREAM_ROLES, may_see
from shared.events import CONTENT_TYPE, stream_for

log = logging.getLogger("seedbed.gateway.asyncapi")

DESCRIPTION = (
    "Every event Seedbed publishes: CloudEvents 1.0 in structured JSON mode, the NATS subject "
    "and the CloudEvents `type` both `<service>.<aggregate>.<event>.v<N>`, `Nats-Msg-Id` the "
    "event id. Each service publishes on its own JetStream stream (`ENTERPRISES`, `DEMAND`, "
    f"`MENTORING`); `{EVENTS_STREAM}` sources all three in one order. Integrators receive them "
    "as Server-Sent Events (`GET /api/v1/events/stream`, `id` = the position in "
    f"`{EVENTS_STREAM}`, resume with `Last-Event-ID`) or as webhooks (`POST /api/v1/webhooks`, "
    "signed per Standard Webhooks, `webhook-id` = the event id). This document lists the "
    "event types the caller's role may see."
)


def nats_server(settings: GatewaySettings) -> dict[str, Any]:
    """The NATS server entry: host and port only (never credentials from the URL)."""
    parts = urlsplit(settings.asyncapi_nats_url or settings.nats_url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return {
        "host": f"{host}:{parts.port or 4222}",
        "protocol": "tls" if parts.scheme == "tls" else "nats",
        "description": "NATS with JetStream; ask the operators for an account to subscribe directly.",
    }


def merge_asyncapi(
    services: Mapping[str, dict[str, Any]], settings: GatewaySettings, unavailable: list[str]
) -> dict[str, Any]:
    """One document of every service's events (services in ``SERVICES`` order)."""
    info: dict[str, Any] = {"title": "Seedbed events", "version": "1.0.0", "description": DESCRIPTION}
    if unavailable:
        info["x-seedbed-unavailable-services"] = sorted(unavailable)
    components: dict[str, Any] = {"messages": {}, "schemas": {}}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for service in SERVICES:
        source = services.get(service)
        if source is None:
            continue
        source = merge_components(components, copy.deepcopy(source), service)
        for key, channel in source.get("channels", {}).items():
            address = str(channel.get("address", ""))
            channel["x-seedbed-stream"] = stream_for(service).name
            channel["x-seedbed-visible-to"] = [role for role in STREAM_ROLES if may_see(role, address)]
            channels.setdefault(key, channel)
        for key, operation in source.get("operations", {}).items():
            operations.setdefault(key, operation)
    return {
        "asyncapi": "3.0.0",
        "info": info,
        "defaultContentType": CONTENT_TYPE,
        "servers": {"nats": nats_server(settings)},
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": components,
    }


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return {ref for item in node for ref in _refs(item)}
    return set()


def for_role(document: dict[str, Any], role: str) -> dict[str, Any]:
    """The document cut to the event types ``role`` may see, with the components they use."""
    channels = {
        key: channel
        for key, channel in document["channels"].items()
        if may_see(role, str(channel.get("address", "")))
    }
    kept_channels = {f"#/channels/{key}" for key in channels}
    operations = {
        key: operation
        for key, operation in document["operations"].items()
        if operation.get("channel", {}).get("$ref") in kept_channels
    }
    components = document["components"]
    reachable: set[str] = set()
    frontier = _refs(channels) | _refs(operations)
    while frontier:
        reachable |= frontier
        found: set[str] = set()
        for ref in frontier:
            parts = ref.removeprefix("#/").split("/")
            if len(parts) == 3 and parts[0] == "components":
                found |= _refs(components.get(parts[1], {}).get(parts[2]))
        frontier = found - reachable
    kept = {
        kind: {name: item for name, item in items.items() if f"#/components/{kind}/{name}" in reachable}
        for kind, items in components.items()
    }
    return document | {"channels": channels, "operations": operations, "components": kept}


class AsyncApiAggregator(ServiceDocuments):
    path = "/asyncapi.json"

    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient, service_auth: httpx.Auth) -> None:
        super().__init__(settings, http, service_auth)
        self._merged: dict[str, Any] | None = None
        self._by_role: dict[str, dict[str, Any]] = {}

    @property
    def refresh_seconds(self) -> float:
        return self.settings.asyncapi_refresh_seconds

    def check(self, document: Any) -> None:
        if not isinstance(document, dict) or not str(document.get("asyncapi", "")).startswith("3."):
            raise ValueError("not an AsyncAPI 3 document")

    def changed(self) -> None:
        self._merged = None
        self._by_role = {}

    async def document(self, role: str) -> dict[str, Any]:
        await self.fill_gaps()
        if self._merged is None:
            self._merged = merge_asyncapi(self.documents, self.settings, self.missing)
            self._by_role = {}
        found = self._by_role.get(role)
        if found is None:
            found = self._by_role[role] = self._merged if role == "staff" else for_role(self._merged, role)
        return found
