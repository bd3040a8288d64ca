"""docs/API.md and the gateway's OpenAPI document agree: every route the contract names is
in the merged document (built here as the gateway builds it, from its own routes and the
services' documents), and every public route of the document is named in the contract."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.openapi.utils import get_openapi

from gateway.app import create_app as gateway_app
from gateway.openapi import merge_documents
from gateway.settings import GatewaySettings
from services.demand.app import create_app as demand_app
from services.enterprises.app import create_app as enterprises_app
from services.mentoring.app import create_app as mentoring_app

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "API.md"
METHODS = "GET|POST|PUT|PATCH|DELETE"
# `GET /api/v1/x`, `POST|GET /api/v1/x`, `GET /healthz` inside code spans (a query string ends it).
ROUTE = re.compile(rf"`((?:{METHODS})(?:\|(?:{METHODS}))*) (/[^`?\s]*)")


def template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def documented_in_api_md() -> set[tuple[str, str]]:
    found = set()
    for methods, path in ROUTE.findall(API_MD.read_text()):
        if not path.startswith(("/api/v1/", "/healthz", "/readyz")):
            continue  # `POST /demand` written short, in a field description
        for method in methods.split("|"):
            found.add((method, template(path)))
    return found


def openapi_routes() -> set[tuple[str, str]]:
    app = gateway_app()
    own = get_openapi(title=app.title, version=app.version, routes=app.routes)
    services = {
        "enterprises": enterprises_app().openapi(),
        "demand": demand_app().openapi(),
        "mentoring": mentoring_app().openapi(),
    }
    merged = merge_documents(own, services, GatewaySettings(), [])
    return {(method.upper(), template(path)) for path, item in merged["paths"].items() for method in item}


def test_every_route_api_md_names_is_in_the_gateways_openapi_document() -> None:
    named = documented_in_api_md()
    assert len(named) > 60, "the route pattern no longer reads API.md"
    missing = sorted(f"{m} {p}" for m, p in named - openapi_routes())
    assert not missing, f"docs/API.md names routes the gateway does not serve: {missing}"


def test_every_public_route_of_the_openapi_document_is_in_api_md() -> None:
    unnamed = sorted(f"{m} {p}" for m, p in openapi_routes() - documented_in_api_md())
    assert not unnamed, f"routes missing from docs/API.md: {unnamed}"


def test_every_reference_to_api_md_in_the_repository_resolves() -> None:
    """A mention of API.md is a link or a path that exists (docs/API.md), not a file elsewhere."""
    stale = []
    for path in ROOT.rglob("*"):
        skipped = {".venv", ".git", "var"} & set(path.parts) or path == Path(__file__).resolve()
        if not path.is_file() or path.suffix not in (".md", ".py") or skipped:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in re.finditer(r"[\w./-]*API\.md", line):
                target = match.group(0)
                if target != "docs/API.md" and (path.parent / target).resolve() != API_MD:
                    stale.append(f"{path.relative_to(ROOT)}:{number}: {target}")
    assert not stale, stale
