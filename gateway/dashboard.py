"""``GET /api/v1/enterprises/{id}/dashboard``: profile, readiness, top matches, upcoming sessions.

The four parts are fetched concurrently, each as the caller (their own principal,
so each service applies its own rules). The caller's rights decide the answer:
the roles ACCESS.md refuses are refused here first, and a 403/404 from the part
that owns the enterprise (the profile) is the dashboard's answer. A part whose
service is down, slow or failing is marked unavailable and the rest still
answer 200.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, Request

from gateway.api import CredentialDep, RuntimeDep, problem
from gateway.proxy import new_traceparent
from gateway.schemas import Dashboard, DashboardPart
from shared.logs import request_id_var
from shared.principal import HEADER, body_digest, sign
from shared.problems import PROBLEM_BASE, Problem, forbidden, not_found

router = APIRouter()


class _SignedAs(httpx.Auth):
    """Signs each call with the caller's already encoded principal."""

    def __init__(self, secret: bytes, payload: str) -> None:
        self.secret = secret
        self.payload = payload

    requires_request_body = True  # the body's digest is signed

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("latin-1")
        digest = body_digest(request.content)
        request.headers[HEADER] = sign(self.secret, request.method, target, self.payload, digest=digest)
        yield request


@dataclass
class _Fetched:
    part: DashboardPart
    status: int | None = None  # the service's status, when it answered
    body: Any = None


async def _fetch(
    http: httpx.AsyncClient,
    service: str,
    url: str,
    params: dict[str, str],
    auth: httpx.Auth,
    headers: dict[str, str],
    timeout: float,
) -> _Fetched:
    try:
        response = await http.get(url, params=params, auth=auth, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        return _Fetched(DashboardPart(status="unavailable", service=service, detail="no answer in time"))
    except httpx.HTTPError:
        return _Fetched(DashboardPart(status="unavailable", service=service, detail="service not reachable"))
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200:
        return _Fetched(DashboardPart(status="ok", service=service, data=body), 200, body)
    detail = body.get("detail") or body.get("title") if isinstance(body, dict) else None
    return _Fetched(
        DashboardPart(
            status="unavailable",
            service=service,
            detail=f"{service} answered {response.status_code}" + (f": {detail}" if detail else ""),
        ),
        response.status_code,
        body,
    )


def _items(data: Any, limit: int) -> Any:
    """At most ``limit`` items of a list answer (``{"items": [...]}``), the rest as it came."""
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        return {**data, "items": data["items"][:limit]}
    return data


@router.get(
    "/enterprises/{enterprise_id}/dashboard",
    response_model=Dashboard,
    summary="An enterprise's profile, readiness, top matches and upcoming sessions in one call",
    tags=["composite"],
    responses={
        403: problem("The caller's role may not see enterprise dashboards."),
        404: problem("No such enterprise, or not one the caller may see."),
    },
)
async def enterprise_dashboard(
    enterprise_id: uuid.UUID, request: Request, credential: CredentialDep, runtime: RuntimeDep
) -> Dashboard:
    principal = credential.principal
    # ACCESS.md: staff and mentors see any; an enterprise its own; anchors are told nothing.
    if principal.role == "anchor" or (
        principal.role == "enterprise" and principal.subject_id != str(enterprise_id)
    ):
        raise not_found("Enterprise", enterprise_id)
    if principal.role not in ("staff", "mentor", "enterprise"):
        raise forbidden("Your role may not see enterprise dashboards.")

    settings = runtime.settings
    upstreams = settings.upstreams()
    auth = _SignedAs(runtime.secret, credential.payload)
    headers = {
        "traceparent": request.headers.get("traceparent") or new_traceparent(),
        "accept": "application/json",
    }
    if (request_id := request_id_var.get()) is not None:
        headers["x-request-id"] = request_id
    now = datetime.now(UTC)
    timeout = settings.dashboard_part_timeout_seconds
    ident = str(enterprise_id)

    def fetch(service: str, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{upstreams[service]}/api/v1{path}"
        return _fetch(runtime.http, service, url, params or {}, auth, headers, timeout)

    profile, readiness, matches, sessions = await asyncio.gather(
        fetch("enterprises", f"/enterprises/{ident}"),
        fetch("enterprises", f"/enterprises/{ident}/readiness"),
        fetch("demand", f"/enterprises/{ident}/matches", {"limit": str(settings.dashboard_top_matches)}),
        fetch(
            "mentoring",
            "/sessions",
            {
                "enterprise_id": ident,
                "from": now.isoformat().replace("+00:00", "Z"),
                "limit": str(settings.dashboard_upcoming_sessions),
            },
        ),
    )
    # The service that owns the enterprise decides whether the caller may see it.
    deciding = [profile] if profile.status is not None else [readiness, matches]
    for part in deciding:
        if part.status in (403, 404):
            body = part.body if isinstance(part.body, dict) else {}
            kind = str(body.get("type", ""))
            raise Problem(
                part.status,
                str(body.get("title") or ("Enterprise not found" if part.status == 404 else "Forbidden")),
                str(body.get("detail") or "") or None,
                type=kind.removeprefix(PROBLEM_BASE) if kind.startswith(PROBLEM_BASE) else None,
            )
    if matches.status == 200:
        matches.part.data = _items(matches.part.data, settings.dashboard_top_matches)
    if sessions.status == 200:
        sessions.part.data = _items(sessions.part.data, settings.dashboard_upcoming_sessions)
    parts = {
        "profile": profile.part,
        "readiness": readiness.part,
        "top_matches": matches.part,
        "upcoming_sessions": sessions.part,
    }
    return Dashboard(
        enterprise_id=enterprise_id,
        generated_at=now,
        unavailable=[name for name, part in parts.items() if part.status != "ok"],
        **parts,
    )
