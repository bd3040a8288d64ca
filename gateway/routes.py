"""The route table: which part of the system answers each public path.

Services serve exactly the public paths, so the gateway forwards a path unchanged
to its owner, chosen by the first segment after ``/api/v1`` (two paths under
``/enterprises/{id}`` belong elsewhere). ``PUBLIC_ROUTES`` lists every route of the
public contract (docs/API.md, docs/ACCESS.md); tests check the OpenAPI document and the
authorization matrix against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

API_PREFIX: Final = "/api/v1"
GATEWAY: Final = "gateway"
SERVICES: Final = ("enterprises", "demand", "mentoring")
# /admin/<part>/...: operations routes, answered by the part named (a service, or the gateway).
ADMIN: Final = "admin"

SEGMENT_OWNERS: Final[dict[str, str]] = {
    "enterprises": "enterprises",
    "cohorts": "enterprises",
    "milestone-definitions": "enterprises",
    "bids": "enterprises",
    "reports": "enterprises",
    "anchors": "demand",
    "demand": "demand",
    "pipeline": "demand",
    "mentors": "mentoring",
    "slots": "mentoring",
    "sessions": "mentoring",
    "api-keys": GATEWAY,
    "me": GATEWAY,
    "webhooks": GATEWAY,
    "events": GATEWAY,
    "asyncapi.json": GATEWAY,
    "openapi.json": GATEWAY,
    "docs": GATEWAY,
}
# /enterprises/{id}/<leaf> answered by someone other than the enterprises service.
ENTERPRISE_LEAF_OWNERS: Final[dict[str, str]] = {"matches": "demand", "dashboard": GATEWAY}

_PREFIX_LEN = len(API_PREFIX) + 1


def owner_of(path: str) -> str | None:
    """The owner ("enterprises", "demand", "mentoring" or "gateway") of a path, None if nobody."""
    if not path.startswith("/api/v1/"):
        return None
    segment, _, rest = path[_PREFIX_LEN:].partition("/")
    if segment == ADMIN:
        part = rest.partition("/")[0]
        return part if part in SERVICES or part == GATEWAY else None
    owner = SEGMENT_OWNERS.get(segment)
    if owner == "enterprises" and segment == "enterprises" and rest:
        ident, _, leaf = rest.partition("/")
        if ident and leaf in ENTERPRISE_LEAF_OWNERS:
            return ENTERPRISE_LEAF_OWNERS[leaf]
    return owner


def is_public_feed(method: str, path: str) -> bool:
    """``GET /api/v1/mentors/{id}/calendar.ics``: the one route callable without a credential
    (a calendar app cannot send a bearer header; the mentoring service checks the URL token)."""
    if method != "GET" or not path.startswith("/api/v1/mentors/") or not path.endswith("/calendar.ics"):
        return False
    middle = path[len("/api/v1/mentors/") : -len("/calendar.ics")]
    return bool(middle) and "/" not in middle


def is_import(method: str, path: str) -> bool:
    """Bulk imports take a larger body than any other request."""
    return method == "POST" and path == "/api/v1/demand/imports"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI template, under /api/v1

    @property
    def owner(self) -> str:
        owner = owner_of(self.path)
        assert owner is not None, self.path
        return owner


def _routes(*lines: str) -> tuple[Route, ...]:
    out = []
    for line in lines:
        methods, path = line.split(" ", 1)
        out.extend(Route(method, API_PREFIX + path) for method in methods.split("|"))
    return tuple(out)


# Every route of the public contract (docs/API.md and docs/ACCESS.md).
PUBLIC_ROUTES: Final = _routes(
    "POST|GET /api-keys",
    "GET|DELETE /api-keys/{id}",
    "GET /me",
    "POST|GET /enterprises",
    "GET|PATCH /enterprises/{id}",
    "GET /enterprises/{id}/history",
    "POST|GET /cohorts",
    "GET /cohorts/{id}",
    "POST|GET /milestone-definitions",
    "GET|PATCH /milestone-definitions/{code}",
    "GET /enterprises/{id}/milestones",
    "GET /enterprises/{id}/milestones/{code}",
    "PATCH /enterprises/{id}/milestones/{code}",
    "GET /enterprises/{id}/readiness",
    "POST|GET /enterprises/{id}/bids",
    "GET /bids",
    "GET|PATCH /bids/{id}",
    "GET /bids/{id}/history",
    "GET /reports/impact",
    "GET /reports/impact.csv",
    "POST|GET /anchors",
    "GET|PATCH /anchors/{id}",
    "POST|GET /demand",
    "GET|PATCH /demand/{id}",
    "GET /demand/{id}/history",
    "GET /demand/{id}/candidates",
    "GET|PUT /demand/{id}/award",
    "POST /demand/imports",
    "GET /demand/imports/template.csv",
    "GET /demand/ocds",
    "GET /demand/ocds/extension/{name}",
    "GET /pipeline",
    "GET /enterprises/{id}/matches",
    "POST|GET /mentors",
    "GET|PATCH /mentors/{id}",
    "GET|PUT /mentors/{id}/availability",
    "GET /mentors/{id}/slots",
    "GET /slots",
    "POST|DELETE /mentors/{id}/calendar-token",
    "GET /mentors/{id}/calendar.ics",
    "GET /mentors/recommendations",
    "POST|GET /sessions",
    "GET /sessions/{id}",
    "GET /sessions/{id}/ics",
    "POST /sessions/{id}/cancel",
    "POST /sessions/{id}/reschedule",
    "POST /sessions/{id}/complete",
    "POST /sessions/{id}/no-show",
    "GET /enterprises/{id}/dashboard",
    "POST|GET /webhooks",
    "PATCH|DELETE /webhooks/{id}",
    "GET /webhooks/{id}/deliveries",
    "POST /webhooks/{id}/deliveries/{delivery_id}/redeliver",
    "GET /events/stream",
    "GET /asyncapi.json",
    *(
        line
        for part in (*SERVICES, GATEWAY)
        for line in (
            f"GET /admin/{part}/dead-letters",
            f"GET /admin/{part}/dead-letters/{{dead_letter_id}}",
            f"POST /admin/{part}/dead-letters/{{dead_letter_id}}/replay",
        )
    ),
)
