"""One OpenAPI document for the whole API, generated from the services' own documents.

Each service's ``GET /openapi.json`` (fetched with a signed staff principal, actor
``gateway``; retried while a service is down, refreshed periodically) gives the
paths the route table sends to it; the gateway's own FastAPI routes add theirs.
Schemas that two documents name differently are kept apart by a service prefix.
The merge then states what holds for every operation: the security schemes, the
answers docs/API.md promises route-wide (403, 404 on an object, 409 on a create, 412
on an update) where a service's document leaves them out, the problem+json
answers the gateway itself gives (400, 401, 413, 429, 502, 503, 504), and every error
as problem+json, which is what the shared kit answers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from gateway.documents import ServiceDocuments
from gateway.routes import GATEWAY, SERVICES, is_public_feed, owner_of
from gateway.settings import GatewaySettings
from shared.problems import PROBLEM_MEDIA_TYPE, PROBLEM_SCHEMA, document_problem_responses

log = logging.getLogger("seedbed.gateway.openapi")

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
SCHEMA_REF = "#/components/schemas/"

# Answers docs/API.md promises for every route of a kind, whether or not a service's own document
# names them: a refused role (403), an unknown or hidden object (404), a stale If-Match (412),
# a create whose Idempotency-Key is in use (409).
CONTRACT_RESPONSES: dict[str, tuple[str, str]] = {
    "403": ("Forbidden", "The caller's role may not do this (see docs/ACCESS.md)."),
    "404": ("NotFound", "No such object, or one the caller may not know exists."),
    "409": ("Conflict", "The request conflicts with the current state (or an Idempotency-Key in use)."),
    "412": ("PreconditionFailed", "If-Match does not name the current ETag."),
}

GATEWAY_RESPONSES: dict[str, tuple[str, str]] = {
    "400": (
        "BadRequest",
        "A malformed request: several Authorization headers, an invalid Content-Length, or a "
        "parameter that is not what the route takes (such as a cursor it did not give).",
    ),
    "401": ("Unauthorized", "No credential, or one that is not valid."),
    "413": ("ContentTooLarge", "The request body is larger than the route accepts."),
    "429": ("RateLimited", "Too many requests for this credential; see Retry-After."),
    "502": ("BadGateway", "The connection to the service was lost mid-request."),
    "503": ("ServiceUnavailable", "The service that answers this path is not reachable."),
    "504": ("ServiceTimeout", "The service did not answer in time."),
}


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": SCHEMA_REF + "Problem"}}}


def _rewrite_refs(node: Any, prefix: str, renames: Mapping[str, str]) -> Any:
    """A copy of ``node`` with ``$ref``s to renamed components pointing at their new names."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(prefix):
                name = value[len(prefix) :]
                out[key] = prefix + renames.get(name, name)
            else:
                out[key] = _rewrite_refs(value, prefix, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, prefix, renames) for item in node]
    return node


def merge_components(target: dict[str, Any], source: dict[str, Any], service: str) -> dict[str, Any]:
    """Add ``source``'s components to ``target``; returns the source with its refs rewritten."""
    renames: dict[str, dict[str, str]] = {}
    for kind, items in source.get("components", {}).items():
        existing = target.setdefault(kind, {})
        kind_renames: dict[str, str] = {}
        for name, item in items.items():
            if name in existing and existing[name] != item:
                new = f"{service.capitalize()}{name}"
                suffix = 2
                while new in existing:
                    new, suffix = f"{service.capitalize()}{name}{suffix}", suffix + 1
                kind_renames[name] = new
        renames[kind] = kind_renames
    rewritten = source
    for kind, kind_renames in renames.items():
        if kind_renames:
            rewritten = _rewrite_refs(rewritten, f"#/components/{kind}/", kind_renames)
    for kind, items in rewritten.get("components", {}).items():
        existing = target.setdefault(kind, {})
        for name, item in items.items():
            existing.setdefault(renames.get(kind, {}).get(name, name), item)
    return rewritten


def _normalise_operation(path: str, method: str, operation: dict[str, Any], oidc: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    document_problem_responses(operation)
    if path in OPEN_PATHS:
        operation["security"] = []
        return
    contract = ["403"]
    if "{" in path:
        contract.append("404")
    if method == "post":
        contract.append("409")
    if method in ("put", "patch"):
        contract.append("412")
    for status in contract:
        responses.setdefault(status, {"$ref": f"#/components/responses/{CONTRACT_RESPONSES[status][0]}"})
    wanted = ["400", "401", "429"]
    if owner_of(path) != GATEWAY:
        wanted += ["502", "503", "504"]
    if "requestBody" in operation:
        wanted.append("413")
    for status in wanted:
        responses.setdefault(status, {"$ref": f"#/components/responses/{GATEWAY_RESPONSES[status][0]}"})
    if is_public_feed(method.upper(), path.replace("{", "x").replace("}", "x")):
        schemes: list[dict[str, list[str]]] = [{}, {"apiKey": []}]
        if oidc:
            schemes.append({"oidc": []})
        operation["security"] = schemes
        operation.setdefault(
            "description",
            "Calendar apps call this without a credential; the feed token in the URL authorizes.",
        )


def merge_documents(
    own: dict[str, Any],
    services: Mapping[str, dict[str, Any]],
    settings: GatewaySettings,
    unavailable: list[str],
) -> dict[str, Any]:
    """The public document: the gateway's routes plus each service's routed paths."""
    document = copy.deepcopy(own)
    document["info"] = {
        "title": "Seedbed API",
        "version": own.get("info", {}).get("version", "1.0.0"),
        "description": (
            "The one public API of Seedbed: enterprises and readiness, forward demand and the "
            "pipeline, mentoring, keys and composite views. Authenticate with "
            "`Authorization: Bearer <API key or OIDC token>`. Every error is RFC 9457 "
            "`application/problem+json`."
        ),
    }
    if unavailable:
        document["info"]["x-seedbed-unavailable-services"] = sorted(unavailable)
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    paths: dict[str, Any] = document.setdefault("paths", {})
    for service in SERVICES:
        source = services.get(service)
        if source is None:
            continue
        source = merge_components(components, copy.deepcopy(source), service)
        for path, item in source.get("paths", {}).items():
            if owner_of(path) != service or path in paths:
                continue
            for method in HTTP_METHODS:
                operation = item.get(method)
                if isinstance(operation, dict) and not operation.get("tags"):
                    operation["tags"] = [service]
            paths[path] = item
    oidc = settings.oidc_enabled
    for path, item in paths.items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                _normalise_operation(path, method, operation, oidc)
    components["responses"] = {
        name: {"description": description, "content": _problem_content()}
        for name, description in (*CONTRACT_RESPONSES.values(), *GATEWAY_RESPONSES.values())
    }
    schemes: dict[str, Any] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "A Seedbed API key (`sbk_...`), from `POST /api/v1/api-keys`.",
        }
    }
    security: list[dict[str, list[str]]] = [{"apiKey": []}]
    if oidc:
        schemes["oidc"] = (
            {
                "type": "openIdConnect",
                "openIdConnectUrl": f"{settings.oidc_issuer.rstrip('/')}/.well-known/openid-configuration",
            }
            if settings.oidc_issuer
            else {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        )
        security.append({"oidc": []})
    components["securitySchemes"] = schemes
    document["security"] = security
    document["paths"] = dict(sorted(paths.items()))
    return document


class OpenApiAggregator(ServiceDocuments):
    OwnDocument = Callable[[], dict[str, Any]]
    path = "/openapi.json"

    def __init__(
        self,
        settings: GatewaySettings,
        http: httpx.AsyncClient,
        service_auth: httpx.Auth,
        own: OwnDocument,
    ) -> None:
        super().__init__(settings, http, service_auth)
        self.own = own
        self._merged: dict[str, Any] | None = None

    @property
    def refresh_seconds(self) -> float:
        return self.settings.openapi_refresh_seconds

    def changed(self) -> None:
        self._merged = None

    async def document(self) -> dict[str, Any]:
        await self.fill_gaps()
        if self._merged is None:
            self._merged = merge_documents(self.own(), self.documents, self.settings, self.missing)
        return self._merged
