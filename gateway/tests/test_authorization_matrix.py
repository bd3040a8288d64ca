"""The authorization matrix (OWASP API1 object level, API5 function level), generated from
docs/ACCESS.md and the gateway's route table, run against the whole system.

Every route of ACCESS.md, every role (and no credential at all), on the caller's own objects
and on another tenant's, gets the status ACCESS.md gives. A world of two anchors, two
enterprises, two mentors, their demand lines and sessions is built once through the gateway.
A case whose objects could not be made fails (it is not skipped); the route table must
cover every route of ACCESS.md.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.routes import API_PREFIX, PUBLIC_ROUTES, owner_of
from gateway.tests.conftest import System

ROOT = Path(__file__).resolve().parents[2]
ACCESS_MD = ROOT / "docs" / "ACCESS.md"
ROLES = ("staff", "anchor", "enterprise", "mentor", "integrator")


# -- ACCESS.md, parsed ----------------------------------------------------------------------


@dataclass(frozen=True)
class RouteRule:
    method: str
    path: str  # under /api/v1, with {id}-style parameters
    query: str  # a query the row names, e.g. "enterprise_id="
    cells: tuple[tuple[str, str], ...]  # (role, cell text)

    @property
    def full_path(self) -> str:
        return API_PREFIX + self.path

    def cell(self, role: str) -> str:
        return dict(self.cells)[role]

    @property
    def ident(self) -> str:
        return f"{self.method} {self.path}"


def _routes_of(cell: str) -> list[tuple[str, str, str]]:
    """``POST|GET /a``, ``GET /s/{id}``, ``/ics``, ``POST .../cancel`` -> (method, path, query).

    A token without a method, or starting with ``...``, extends the object of the row's first path."""
    out: list[tuple[str, str, str]] = []
    base = ""
    methods = "GET"
    for token in re.findall(r"`([^`]+)`", cell):
        first, _, rest = token.partition(" ")
        relative = True
        if re.fullmatch(r"[A-Z|]+", first):
            methods, target = first, rest
            relative = target.startswith("...")
        else:
            target = token
        if target.startswith("..."):
            target = target[3:]
        path = base + target if relative and base else target
        path, _, query = path.partition("?")
        if not base:
            # What "..." stands for: the row's first path up to its object ("/sessions/{id}").
            base = path[: path.rindex("}") + 1] if "}" in path else path
        for method in methods.split("|"):
            out.append((method, path, query))
    return out


def test_access_md_route_cells_are_read_as_written() -> None:
    cell = "`GET /sessions/{id}`, `/ics`, `POST .../cancel`, `.../reschedule`"
    assert _routes_of(cell) == [
        ("GET", "/sessions/{id}", ""),
        ("GET", "/sessions/{id}/ics", ""),
        ("POST", "/sessions/{id}/cancel", ""),
        ("POST", "/sessions/{id}/reschedule", ""),
    ]
    assert _routes_of("`POST|GET /webhooks`, `DELETE /webhooks/{id}`, deliveries") == [
        ("POST", "/webhooks", ""),
        ("GET", "/webhooks", ""),
        ("DELETE", "/webhooks/{id}", ""),
    ]
    assert _routes_of("`POST /sessions/{id}/complete`, `.../no-show`") == [
        ("POST", "/sessions/{id}/complete", ""),
        ("POST", "/sessions/{id}/no-show", ""),
    ]
    assert _routes_of("`GET /mentors/recommendations?enterprise_id=`") == [
        ("GET", "/mentors/recommendations", "enterprise_id=")
    ]


def parse_access(text: str) -> list[RouteRule]:
    rules = []
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        # Split on the table's bars, not on those inside code spans (`POST|GET /webhooks`).
        protected = re.sub(r"`[^`]*`", lambda m: m.group(0).replace("|", "\0"), line.strip().strip("|"))
        cells = [c.strip().replace("\0", "|") for c in protected.split("|")]
        route_cell, role_cells = cells[0], cells[1:]
        assert len(role_cells) == len(ROLES), line
        for method, path, query in _routes_of(route_cell):
            rules.append(RouteRule(method, path, query, tuple(zip(ROLES, role_cells, strict=True))))
    return rules


RULES = parse_access(ACCESS_MD.read_text())

# What each cell of ACCESS.md means for a request (the words are the document's own).
CELL_MEANING = {
    "yes": "allow",
    "-": "403",
    "403": "403",
    "404": "404",
    "own (else 404)": "own",
    "yes (all fields, stage)": "allow",
    "own, profile fields only (not `stage`, `cohort_id`)": "own",
    "own": "own",
    "verify/reject, any": "allow",
    "own: `in_progress`, `submitted`": "own",
    "verify/reject (not own submission)": "allow",
    "yes (with `anchor_id`)": "allow",
    "for itself": "for_itself",
    "all lines": "allow",
    "public non-draft lines + all its own": "list_visible",
    "public non-draft": "list_public",
    "public, or own": "visible",
    "public only (else 404)": "public_only",
    "public only": "public_only",
    "own (else 404 / 403 for a public line)": "owner_write",
    "404/403": "non_owner_write",
    "all": "allow",
    "its own": "list_own",
    "participant (else 404)": "own",
    "own; or `public` with the feed token": "own",
    "own enterprise": "own_query",
    "403 (participant) / 404": "participant_403",
    "its mentor": "own",
    "own subscriptions": "allow",
    "public events": "allow",
    # Bids: an anchor sees those on its own lines once their award is known (none is, here).
    "on its own awarded lines": "awarded_lines",
    "on its own awarded lines (else 404)": "awarded_lines",
    "404 (403 on its own awarded lines)": "404",
    # The impact report: every case asks for the shareable version (the full one is staff's).
    "any scope": "allow",
    "`shareable=true`, unnarrowed": "allow",
}


def test_access_md_rows_all_have_a_known_meaning() -> None:
    unknown = {rule.cell(role) for rule in RULES for role in ROLES} - set(CELL_MEANING)
    assert not unknown, f"ACCESS.md has cells this test cannot read yet: {unknown}"
    assert len(RULES) >= 45


def test_every_route_of_access_md_is_in_the_route_table() -> None:
    table = {(r.method, r.path) for r in PUBLIC_ROUTES}
    missing = [rule.ident for rule in RULES if (rule.method, rule.full_path) not in table]
    assert not missing, missing
    assert all(owner_of(rule.full_path) for rule in RULES)


# -- the world the matrix runs in ------------------------------------------------------------


def template(path: str) -> str:
    """A path with its parameters unnamed, to compare ``{id}`` with ``{enterprise_id}``."""
    return re.sub(r"\{[^}]+\}", "{}", path)


@dataclass
class World:
    ids: dict[str, str] = field(default_factory=dict)  # A1, A2, D1..D4, E1, E2, M1, M2, S1, S2
    keys: dict[str, str] = field(default_factory=dict)  # role -> API key
    failures: dict[str, str] = field(default_factory=dict)  # object -> why it could not be made
    slots: dict[str, list[str]] = field(default_factory=dict)  # mentor -> free starts
    routes: set[tuple[str, str]] = field(default_factory=set)  # (METHOD, path) in the document

    def need(self, *names: str) -> None:
        """Fail the test unless the objects it is about were made."""
        for name in names:
            if name not in self.ids:
                pytest.fail(
                    f"{name} could not be created: {self.failures.get(name, 'a prerequisite failed')}"
                )


def enterprise_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "legal_form": "cic_limited_by_guarantee",
        "postcode": "LS6 2QR",
        "cpv_codes": ["55300000"],
        "employees": 4,
        "turnover_pence": 25_000_000,
        "vcse": True,
    }


def demand_body(anchor_id: str, title: str, status: str = "planned", visibility: str = "public") -> dict:
    return {
        "anchor_id": anchor_id,
        "title": title,
        "description": "School meals for the matrix test",
        "cpv_codes": ["55300000"],
        "estimated_value_pence": 12_000_000,
        "category": "services",
        "status": status,
        "visibility": visibility,
        "expected_tender_date": "2027-05-01",
        "contract_start": "2027-09-01",
        "duration_months": 24,
        "suitable_for_sme": True,
        "suitable_for_vcse": True,
    }


ALWAYS_AVAILABLE = {
    "timezone": "Europe/London",
    "weekly": [{"weekday": day, "start": "00:00", "end": "24:00"} for day in range(7)],
    "minimum_notice_minutes": 0,
}


def mentor_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "email": f"{name.lower().replace(' ', '.')}@mentors.example",
        "organisation": "Leeds Anchor Network",
        "expertise": ["insurance", "bidding"],
        "timezone": "Europe/London",
        "session_lengths_minutes": [30, 60],
        "availability": ALWAYS_AVAILABLE,
    }


async def _create(world: World, http: httpx.AsyncClient, name: str, path: str, body: Any) -> None:
    response = await http.post(path, json=body)
    if response.status_code == 201 and "id" in response.json():
        world.ids[name] = str(response.json()["id"])
    else:
        world.failures[name] = f"POST {path} -> {response.status_code} {response.text[:300]}"


async def _until_line_known(http: httpx.AsyncClient, enterprise_id: str, demand_id: str) -> None:
    """Wait (a while) until the enterprises service has consumed the line's published event."""
    url = f"/api/v1/enterprises/{enterprise_id}/readiness"
    for _ in range(300):
        if (await http.get(url, params={"demand_id": demand_id})).status_code == 200:
            return
        await asyncio.sleep(0.1)


async def build_world(system: System) -> World:
    world = World()
    async with system.client() as http:
        document = (await http.get("/openapi.json")).json()
        for path, item in document.get("paths", {}).items():
            world.routes |= {(method.upper(), template(path)) for method in item if method != "parameters"}
        tag = uuid.uuid4().hex[:6]
        for name in ("A1", "A2"):
            await _create(
                world,
                http,
                name,
                "/api/v1/anchors",
                {"name": f"Anchor {name} {tag}", "type": "local_authority"},
            )
        cohort = {"name": f"Cohort C1 {tag}", "programme": "Tender ready", "start_date": "2027-01-11",
                  "end_date": "2027-06-30"}  # fmt: skip
        await _create(world, http, "C1", "/api/v1/cohorts", cohort)
        for name in ("E1", "E2"):
            await _create(
                world, http, name, "/api/v1/enterprises", enterprise_body(f"Enterprise {name} {tag}")
            )
        for name in ("M1", "M2"):
            await _create(world, http, name, "/api/v1/mentors", mentor_body(f"Mentor {name} {tag}"))
        lines = {
            "D1": ("A1", "draft", "public"),  # the anchor's own, hidden from everyone else
            "D2": ("A2", "planned", "public"),  # another anchor's public line
            "D3": ("A2", "draft", "public"),  # another anchor's draft
            "D4": ("A2", "planned", "aggregate_only"),  # another anchor's aggregate-only line
        }
        for name, (anchor, status, visibility) in lines.items():
            if anchor in world.ids:
                body = demand_body(world.ids[anchor], f"Line {name} {tag}", status, visibility)
                await _create(world, http, name, "/api/v1/demand", body)
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
        for mentor in ("M1", "M2"):
            if mentor not in world.ids:
                continue
            response = await http.get(
                f"/api/v1/mentors/{world.ids[mentor]}/slots",
                params={
                    "start": start.isoformat(),
                    "end": (start + timedelta(days=3)).isoformat(),
                    "duration_minutes": 60,
                },
            )
            if response.status_code == 200:
                world.slots[mentor] = [item["start"] for item in response.json()["items"]]
            else:
                world.failures[f"slots {mentor}"] = f"{response.status_code} {response.text[:300]}"
        for session, mentor, enterprise in (("S1", "M1", "E1"), ("S2", "M2", "E2")):
            if mentor in world.ids and enterprise in world.ids and world.slots.get(mentor):
                body = {
                    "mentor_id": world.ids[mentor],
                    "enterprise_id": world.ids[enterprise],
                    "start": world.slots[mentor].pop(0),
                    "duration_minutes": 60,
                    "topic": "Public liability insurance",
                }
                await _create(world, http, session, "/api/v1/sessions", body)
        # B1 and B2: the bids of E1 and E2 on D2, once the enterprises service has heard of D2.
        if {"E1", "D2"} <= set(world.ids):
            await _until_line_known(http, world.ids["E1"], world.ids["D2"])
        for bid, enterprise in (("B1", "E1"), ("B2", "E2")):
            if enterprise in world.ids and "D2" in world.ids:
                path = f"/api/v1/enterprises/{world.ids[enterprise]}/bids"
                await _create(world, http, bid, path, {"demand_id": world.ids["D2"]})
    subjects = {"staff": None, "anchor": "A1", "enterprise": "E1", "mentor": "M1", "integrator": None}
    for role, subject in subjects.items():
        subject_id = world.ids.get(subject) if subject else None
        # When its object could not be made, create_key makes another (keys need a real subject).
        world.keys[role] = (await system.create_key(role, subject_id))["key"]
    return world


@pytest.fixture(scope="module")
def world(system: System) -> World:
    return asyncio.run(build_world(system))


# -- the cases -------------------------------------------------------------------------------

OK = "ok"
DENIED = "denied"  # 403 or 404: where ACCESS.md does not say which


@dataclass(frozen=True)
class Case:
    rule: RouteRule
    role: str  # one of ROLES, or "anonymous"
    target: str | None  # the object the {id} (or the body, or the query) is about
    expected: str  # OK, DENIED, "401", "403", "404"
    meaning: str

    @property
    def id(self) -> str:
        return f"{self.rule.ident} {self.role} {self.target or '-'} -> {self.expected}"


def kind_of(path: str) -> str | None:
    segment = path.split("/")[1]
    return {
        "enterprises": "enterprise",
        "demand": "demand",
        "mentors": "mentor",
        "sessions": "session",
        "anchors": "anchor",
        "cohorts": "cohort",
        "api-keys": "key",
        "webhooks": "webhook",
        "bids": "bid",
    }.get(segment)


OWN = {
    "enterprise": "E1",
    "mentor": "M1",
    "session": "S1",
    "demand": "D1",
    "anchor": "A1",
    "cohort": "C1",
    "bid": "B1",
}
OTHERS = {
    "cohort": [],  # cohorts belong to the incubator (staff), not to a tenant
    "enterprise": ["E2"],
    "mentor": ["M2"],
    "session": ["S2"],
    "demand": ["D2", "D3", "D4"],
    "anchor": ["A2"],
    "bid": ["B2"],  # E2's bid
}
HIDDEN_LINES = {"D1", "D3", "D4"}  # not public: only their anchor (A1 for D1) and staff see them


def expectations(rule: RouteRule, role: str) -> list[tuple[str | None, str]]:
    meaning = CELL_MEANING[rule.cell(role)]
    kind = kind_of(rule.path) if "{id}" in rule.path else None
    if meaning == "own_query":
        return [("E1", OK), ("E2", DENIED)]
    if meaning == "for_itself":
        return [("own", OK), ("other", "for_itself_other")]
    if kind in (None, "key", "webhook"):
        if meaning in ("403", "404"):
            return [(None, meaning)]
        return [(None, OK)]
    targets = [OWN[kind], *OTHERS[kind]]
    out: list[tuple[str | None, str]] = []
    for target in targets:
        own = target == OWN[kind] and role in ("anchor", "enterprise", "mentor") and _bound(role, kind)
        if meaning in ("allow", "list_visible", "list_public", "list_own"):
            expected = OK
        elif meaning in ("403", "404"):
            expected = meaning
        elif meaning == "own":
            expected = OK if own else ("403" if kind == "mentor" else "404")
        elif meaning == "visible":
            expected = OK if own or target not in HIDDEN_LINES else "404"
        elif meaning == "public_only":
            expected = "404" if target in HIDDEN_LINES else OK
        elif meaning == "owner_write":
            expected = OK if own else ("404" if target in HIDDEN_LINES else "403")
        elif meaning == "non_owner_write":
            expected = "404" if target in HIDDEN_LINES else "403"
        elif meaning == "participant_403":
            expected = "403" if own else "404"
        elif meaning == "awarded_lines":
            expected = "404"  # no line of the world has an award: its bids stay hidden from anchors
        else:
            raise AssertionError(f"no expectation for {meaning}")
        out.append((target, expected))
    return out


def _bound(role: str, kind: str) -> bool:
    """Whether the role's own subject makes OWN[kind] its own object."""
    return {
        "anchor": ("demand", "anchor"),
        "enterprise": ("enterprise", "session", "bid"),
        "mentor": ("mentor", "session"),
    }[role].__contains__(kind)


def all_cases() -> list[Case]:
    cases = []
    for rule in RULES:
        for role in ROLES:
            for target, expected in expectations(rule, role):
                cases.append(Case(rule, role, target, expected, CELL_MEANING[rule.cell(role)]))
        if not (rule.method == "GET" and rule.path == "/mentors/{id}/calendar.ics"):
            kind = kind_of(rule.path) if "{id}" in rule.path else None
            cases.append(Case(rule, "anonymous", OWN.get(kind or ""), "401", "no credential"))
    # Denials first, and the routes that change a session's state last: an allowed cancel must not
    # turn a later check of "may this role cancel?" into "this session is already cancelled".
    destructive = ("/cancel", "/complete", "/no-show", "/reschedule")
    return sorted(
        cases,
        key=lambda c: (c.rule.path.endswith(destructive), c.expected == OK, RULES.index(c.rule)),
    )


CASES = all_cases()


# -- requests ------------------------------------------------------------------------------


def request_for(case: Case, world: World, system: System) -> tuple[str, str, dict[str, Any]]:
    """(method, url path with query, httpx keyword arguments) for a case."""
    rule, role, target = case.rule, case.role, case.target
    marker = f"by {role}"
    path = rule.path
    params: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    if "{id}" in path:
        kind = kind_of(path)
        if kind == "key":
            # A key of its own to revoke, so that revoking it harms no other case.
            with httpx.Client(
                base_url=system.url, headers={"Authorization": f"Bearer {system.staff_key}"}
            ) as http:
                made = http.post("/api/v1/api-keys", json={"role": "integrator", "name": "to revoke"})
            path = path.replace("{id}", made.json()["id"])
        elif kind == "webhook":
            # A subscription of the caller's own (for the roles that may have one), so that an
            # allowed call finds it; the other roles are refused before any lookup.
            made_id = str(uuid.uuid4())
            if role in ("staff", "anchor", "integrator"):
                with httpx.Client(
                    base_url=system.url, headers={"Authorization": f"Bearer {world.keys[role]}"}
                ) as http:
                    made = http.post(
                        "/api/v1/webhooks",
                        json={"url": "https://hooks.example/seedbed", "types": ["demand.item.*"]},
                    )
                assert made.status_code == 201, made.text
                made_id = made.json()["id"]
            path = path.replace("{id}", made_id)
        else:
            assert target is not None
            world.need(target)
            path = path.replace("{id}", world.ids[target])
    path = path.replace("{code}", "legal_entity").replace("{delivery_id}", str(uuid.uuid4()))
    path = path.replace("{name}", "extension.json")  # the OCDS extension's files
    path = path.replace("{dead_letter_id}", "1")  # none there: staff get 404 (see verdict)
    own_anchor = world.ids.get("A1")
    body: Any = None
    template = (rule.method, rule.path)
    if template == ("POST", "/api-keys"):
        body = {"role": "integrator", "subject_id": None, "name": f"matrix {marker}"}
    elif template == ("POST", "/enterprises"):
        body = enterprise_body(f"Created {marker} {uuid.uuid4().hex[:6]}")
    elif template == ("PATCH", "/enterprises/{id}"):
        body = {"name": f"Renamed {marker}"}
    elif template == ("POST", "/enterprises/{id}/bids"):
        world.need("D2")
        body = {"demand_id": world.ids["D2"]}  # E1 and E2 bid on it already: allowed is a 409
    elif template == ("PATCH", "/bids/{id}"):
        body = {"note": f"Noted {marker}"}
    elif template == ("POST", "/cohorts"):
        body = {"name": f"Cohort {marker}", "programme": "Tender ready", "start_date": "2027-01-11",
                "end_date": "2027-06-30"}  # fmt: skip
    elif template == ("POST", "/milestone-definitions"):
        body = {"code": f"matrix_{role}_{uuid.uuid4().hex[:6]}", "name": "Matrix check", "category": "policy",
                "description": "A definition made by the authorization matrix."}  # fmt: skip
    elif template == ("PATCH", "/enterprises/{id}/milestones/{code}"):
        body = (
            {"status": "in_progress"}
            if role in ("enterprise", "anchor", "integrator")
            else {"status": "verified", "note": f"verified {marker}"}
        )
    elif template == ("PATCH", "/milestone-definitions/{code}"):
        body = {"description": f"Evidence that the enterprise exists in law (checked {marker})."}
    elif template == ("PATCH", "/anchors/{id}"):
        body = {"annual_third_party_spend_pence": 250_000_000_00}
    elif template == ("POST", "/anchors"):
        body = {"name": f"Anchor {marker} {uuid.uuid4().hex[:6]}", "type": "university"}
    elif template == ("POST", "/demand"):
        world.need("A1", "A2")
        anchor = world.ids["A2"] if target == "other" else own_anchor
        body = demand_body(anchor, f"Posted {marker}")  # type: ignore[arg-type]
    elif template == ("PATCH", "/demand/{id}"):
        body = {"title": f"Retitled {marker}"}
    elif template == ("PUT", "/demand/{id}/award"):
        body = {
            "supplier_name": f"Supplier {marker}",
            "contract_value_pence": 9_000_000,
            "awarded_on": "2026-11-02",
        }
    elif rule.path.startswith("/reports/impact"):
        params["shareable"] = "true"
    elif template == ("POST", "/demand/imports"):
        world.need("A1", "A2")
        anchor = world.ids["A2"] if target == "other" else own_anchor
        if role == "staff" or target == "other":
            params["anchor_id"] = anchor
        ref = uuid.uuid4().hex[:8]
        csv = (
            "title,cpv_codes,estimated_value_pence,category,external_ref\n"
            f"Imported {marker},55300000,4000000,services,matrix-{ref}\n"
        )
        kwargs["content"] = csv.encode()
        kwargs["headers"] = {"Content-Type": "text/csv"}
    elif template == ("POST", "/mentors"):
        body = mentor_body(f"Mentor {marker} {uuid.uuid4().hex[:6]}")
    elif template == ("PATCH", "/mentors/{id}"):
        body = {"bio": f"Bio {marker}"}
    elif template == ("PUT", "/mentors/{id}/availability"):
        body = ALWAYS_AVAILABLE
    elif template == ("POST", "/sessions"):
        world.need("M1", "M2", "E1", "E2")
        if role == "mentor":
            mentor, enterprise = ("M2" if target == "other" else "M1"), "E1"
        else:
            mentor, enterprise = "M1", ("E2" if target == "other" else "E1")
        slots = world.slots.get(mentor) or []
        if not slots:
            pytest.fail(
                f"no free slot of {mentor} left: {world.failures.get(f'slots {mentor}', 'all booked')}"
            )
        body = {
            "mentor_id": world.ids[mentor],
            "enterprise_id": world.ids[enterprise],
            "start": slots.pop(0),
            "duration_minutes": 60,
            "topic": f"Booked {marker}",
        }
    elif rule.path.endswith("/cancel"):
        body = {"reason": f"cancelled {marker}"}
    elif rule.path.endswith("/reschedule"):
        slots = world.slots.get("M1") or []
        body = {"start": slots[-1] if slots else (datetime.now(UTC) + timedelta(days=3)).isoformat()}
    elif rule.path.endswith("/complete"):
        body = {"outcome": f"completed {marker}"}
    elif rule.path.endswith("/no-show"):
        body = {"absent_party": "enterprise"}
    elif template in (("GET", "/mentors/{id}/slots"), ("GET", "/slots")):
        start = datetime.now(UTC) + timedelta(days=1)
        params |= {"start": start.isoformat(), "end": (start + timedelta(days=1)).isoformat(),
                   "duration_minutes": 30}  # fmt: skip
    elif template == ("POST", "/webhooks"):
        body = {"url": "https://hooks.example/seedbed", "types": ["demand.item.published.v1"]}
    elif template == ("PATCH", "/webhooks/{id}"):
        body = {"active": False}
    if rule.query.startswith("enterprise_id"):
        world.need(target or "E1")
        params["enterprise_id"] = world.ids[target or "E1"]
    if body is not None:
        kwargs["json"] = body
    if params:
        kwargs["params"] = params
    return rule.method, API_PREFIX + path, kwargs


def verdict(case: Case, response: httpx.Response, world: World) -> str | None:
    """None when the answer is what ACCESS.md says, else what went wrong."""
    status = response.status_code
    if status >= 500:
        return f"server error {status}: {response.text[:300]}"
    if status >= 400 and response.headers.get("content-type") != "application/problem+json":
        return f"{status} without problem+json"
    expected = case.expected
    if expected == OK:
        made_up_delivery = case.rule.path.endswith("/redeliver") and status == 404
        if made_up_delivery and response.json()["title"] == "Delivery not found":
            return None  # the caller's own subscription was found; the made-up delivery was not
        if "/dead-letters/{dead_letter_id}" in case.rule.path and status == 404:
            return None  # let through to the lookup of a dead letter there is none of
        no_award = case.rule.path == "/demand/{id}/award" and status == 404
        if no_award and response.json()["title"] == "Award not found":
            return None  # the line was found for the caller; it has no award (yet)
        if status in (401, 403, 404, 405):
            return f"expected to be allowed, got {status}: {response.text[:300]}"
        if status == 422:
            return f"allowed but 422: the test's body no longer fits the schema? {response.text[:300]}"
        return None
    if expected == "for_itself_other":
        if status in (403, 404):
            return None
        if 200 <= status < 300:
            # Allowed only if the service bound the new object to the caller, not to the other tenant.
            data = response.json() if response.content else {}
            own = {
                "anchor": world.ids.get("A1"),
                "enterprise": world.ids.get("E1"),
                "mentor": world.ids.get("M1"),
            }
            bound = {data.get("anchor_id"), data.get("enterprise_id"), data.get("mentor_id")}
            if own.get(case.role) in bound and not ({world.ids.get(o) for o in ("A2", "E2", "M2")} & bound):
                return None
            return f"created for another tenant: {status} {response.text[:300]}"
        return f"expected 403 for another tenant, got {status}: {response.text[:300]}"
    if expected == DENIED:
        return None if status in (403, 404) else f"expected 403 or 404, got {status}: {response.text[:300]}"
    return None if status == int(expected) else f"expected {expected}, got {status}: {response.text[:300]}"


def list_check(case: Case, response: httpx.Response, world: World) -> str | None:
    """For list routes, the objects the caller must and must not see."""
    if case.expected != OK or response.status_code != 200 or case.rule.method != "GET":
        return None
    if case.rule.path not in ("/demand", "/sessions", "/bids"):
        return None
    items = response.json().get("items", [])
    seen = {str(item.get("id") or item.get("demand_id") or item.get("session_id")) for item in items}
    ids = world.ids
    if case.rule.path == "/demand":
        hidden = {"anchor": {"D3", "D4"}}.get(case.role, HIDDEN_LINES if case.role != "staff" else set())
        leaked = [name for name in hidden if ids.get(name) in seen]
        if leaked:
            return f"{case.role} sees lines it must not: {leaked}"
        if case.role == "anchor" and ids.get("D1") and ids["D1"] not in seen:
            return "the anchor does not see its own draft"
    if case.rule.path == "/bids" and case.role in ("enterprise", "anchor"):
        if ids.get("B2") in seen or (case.role == "anchor" and seen):
            return f"{case.role} sees bids it must not"
        if case.role == "enterprise" and ids.get("B1") and ids["B1"] not in seen:
            return "the enterprise does not see its own bid"
    if case.rule.path == "/sessions" and case.role in ("enterprise", "mentor"):
        if ids.get("S2") in seen:
            return f"{case.role} sees another tenant's session"
        if ids.get("S1") and ids["S1"] not in seen:
            return f"{case.role} does not see its own session"
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_access_matrix(case: Case, system: System, world: World) -> None:
    documented = (case.rule.method, template(case.rule.full_path)) in world.routes
    assert documented, (
        f"route missing from the gateway's document: {case.rule.ident} ({owner_of(case.rule.full_path)})"
    )
    method, path, kwargs = request_for(case, world, system)
    if case.rule.path in ("/demand", "/sessions") and method == "GET":
        kwargs.setdefault("params", {})["limit"] = 500
    headers = kwargs.pop("headers", {})
    if case.role != "anonymous":
        headers["Authorization"] = f"Bearer {world.keys[case.role]}"
    with httpx.Client(base_url=system.url, timeout=20) as http:
        if case.rule.path == "/events/stream":
            # A stream never ends: its status and headers say it all, the body is not read.
            with http.stream(method, path, headers=headers, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
        else:
            response = http.request(method, path, headers=headers, **kwargs)
    problem = verdict(case, response, world) or list_check(case, response, world)
    assert problem is None, f"{case.id} ({case.meaning}): {problem}"


def test_no_denied_write_changed_another_tenants_objects(system: System, world: World) -> None:
    """After the matrix: the objects of the other tenant carry no mark of a role that was refused."""
    refused = ("anchor", "enterprise", "mentor", "integrator")
    checks = {"E2": ("/enterprises/{}", "name"), "M2": ("/mentors/{}", "bio")}
    checks |= {name: ("/demand/{}", "title") for name in ("D2", "D3", "D4")}
    checks["B2"] = ("/bids/{}", "note")
    with httpx.Client(
        base_url=system.url, timeout=20, headers={"Authorization": f"Bearer {system.staff_key}"}
    ) as http:
        for name, (template, field_name) in checks.items():
            world.need(name)
            response = http.get(API_PREFIX + template.format(world.ids[name]))
            assert response.status_code == 200, f"{name}: {response.status_code} {response.text[:300]}"
            value = str(response.json().get(field_name))
            assert not any(value.endswith(f"by {role}") for role in refused), f"{name}.{field_name} = {value}"


def test_the_calendar_feed_opens_with_its_token_and_nothing_else(system: System, world: World) -> None:
    world.need("M1")
    mentor = world.ids["M1"]
    with httpx.Client(base_url=system.url, timeout=20) as http:
        rotated = http.post(
            f"/api/v1/mentors/{mentor}/calendar-token",
            headers={"Authorization": f"Bearer {world.keys['mentor']}"},
        )
        assert rotated.status_code == 200, rotated.text
        token = rotated.json()["token"]
        feed = http.get(f"/api/v1/mentors/{mentor}/calendar.ics", params={"token": token})
        wrong = http.get(f"/api/v1/mentors/{mentor}/calendar.ics", params={"token": token[:-2] + "xx"})
        bare = http.get(f"/api/v1/mentors/{mentor}/calendar.ics")
        elsewhere = http.get(f"/api/v1/mentors/{mentor}", params={"token": token})
    assert feed.status_code == 200, feed.text
    assert feed.headers["content-type"].startswith("text/calendar")
    assert wrong.status_code in (401, 403, 404)
    assert bare.status_code in (401, 403, 404)
    assert elsewhere.status_code == 401  # the public principal exists only for the feed
