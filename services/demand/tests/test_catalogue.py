"""Requirement codes are checked against the demand service's copy of the milestone catalogue, on
every way in; the copy is fed by the enterprises service's events on NATS."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI

from services.demand.imports import CSV_EXAMPLE
from services.demand.models import demand_lines, milestone_catalogue
from services.demand.tests.conftest import SEEDED_CATALOGUE, anchor_principal, line_body
from services.demand.tests.test_imports import csv_row, csv_text, import_file, package, planning_release
from services.demand.tests.test_matching import Enterprises
from shared.testing.apps import STAFF, client
from shared.testing.polling import wait_until

UNKNOWN = [{"code": "public_liability_insurance", "min_value_pence": 1}, {"code": "no_such_milestone"}]
DEFINITION_PUBLISHED = "enterprises.milestone_definition.published.v1"


def definition(code: str, version: int, name: str = "Food hygiene rating 5") -> dict[str, Any]:
    """The payload of enterprises.milestone_definition.published.v1 as docs/EVENTS.md lists it."""
    return {
        "code": code,
        "version": version,
        "name": name,
        "category": "accreditation",
        "description": "Food Standards Agency hygiene rating of 5 for catering contracts.",
        "applies_when": {"cpv_division_in": ["55"]},
        "threshold_pence": None,
        "validity_days": 730,
        "core": True,
        "builtin": False,
    }


def errors_of(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return {e["field"]: e["message"] for e in response.json()["errors"]}


async def count_lines(app: FastAPI) -> int:
    async with client(app, STAFF) as http:
        return len((await http.get("/api/v1/demand", params={"limit": 500})).json()["items"])


async def test_an_unknown_requirement_code_is_refused_on_post_naming_the_field(
    app: FastAPI, new_anchor
) -> None:
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        response = await http.post("/api/v1/demand", json=line_body(requirements=UNKNOWN))
    errors = errors_of(response)
    assert set(errors) == {"requirements.1.code"}
    assert "'no_such_milestone' is not in the milestone catalogue" in errors["requirements.1.code"]
    assert "/api/v1/milestone-definitions" in errors["requirements.1.code"]
    assert await count_lines(app) == 0


async def test_an_unknown_requirement_code_is_refused_on_patch_but_one_the_line_had_is_not(
    app: FastAPI, new_anchor
) -> None:
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        created = (await http.post("/api/v1/demand", json=line_body())).json()
        url = f"/api/v1/demand/{created['id']}"
        response = await http.patch(url, json={"requirements": UNKNOWN}, headers={"If-Match": '"1"'})
        assert set(errors_of(response)) == {"requirements.1.code"}
        assert (await http.get(url)).json()["version"] == 1
    # A code a line already had (kept before the check existed) does not block other changes.
    async with app.state.database.transaction() as session:
        await session.execute(
            sa.update(demand_lines)
            .where(demand_lines.c.id == created["id"])
            .values(requirements=[{"code": "legacy_code", "min_value_pence": None}])
        )
    async with client(app, anchor_principal(anchor["id"])) as http:
        renamed = await http.patch(url, json={"title": "Renamed"}, headers={"If-Match": '"1"'})
        assert renamed.status_code == 200, renamed.text
        again = await http.patch(
            url,
            json={"requirements": [{"code": "no_such_milestone"}]},
            headers={"If-Match": renamed.headers["etag"]},
        )
        assert set(errors_of(again)) == {"requirements.0.code"}


async def test_unknown_requirement_codes_are_row_errors_of_every_import_format(
    app: FastAPI, new_anchor
) -> None:
    anchor = await new_anchor()
    principal = anchor_principal(anchor["id"])
    bad_csv = csv_text(
        [csv_row("CSV-1"), csv_row("CSV-2", requirements="public_liability_insurance=1;no_such_milestone")]
    )
    response = await import_file(app, principal, bad_csv, "text/csv")
    assert response.status_code == 422, response.text
    assert [(e["row"], e["field"]) for e in response.json()["errors"]] == [(3, "requirements.1.code")]
    assert "not in the milestone catalogue" in response.json()["errors"][0]["message"]

    ndjson = "\n".join(
        json.dumps(line_body(external_ref=f"ND-{i}", requirements=requirements))
        for i, requirements in enumerate([[{"code": "cyber_essentials"}], UNKNOWN, [{"code": "made_up"}]])
    )
    response = await import_file(app, principal, ndjson, "application/x-ndjson")
    assert response.status_code == 422, response.text
    assert [(e["row"], e["field"]) for e in response.json()["errors"]] == [
        (2, "requirements.1.code"),
        (3, "requirements.0.code"),
    ]

    ocds = package(
        planning_release("ocds-c-1", requirements=[{"code": "safeguarding_policy"}]),
        planning_release("ocds-c-2", requirements=[{"code": "no_such_milestone"}]),
        buyer=anchor["id"],
    )
    response = await import_file(app, principal, ocds, "application/json")
    assert response.status_code == 422, response.text
    assert [(e["row"], e["field"]) for e in response.json()["errors"]] == [(2, "requirements.0.code")]
    assert await count_lines(app) == 0  # all or nothing

    good = await import_file(app, principal, csv_text([csv_row("CSV-1")]), "text/csv")
    assert good.status_code == 200, good.text


async def test_before_the_catalogue_arrives_requirement_codes_are_refused_saying_so(
    app: FastAPI, new_anchor
) -> None:
    async with app.state.database.transaction() as session:
        await session.execute(sa.delete(milestone_catalogue))
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        refused = await http.post("/api/v1/demand", json=line_body())
        message = errors_of(refused)["requirements.0.code"]
        assert "has not reached the demand service yet" in message
        # A line without requirements is taken as ever.
        plain = await http.post("/api/v1/demand", json=line_body(requirements=[]))
        assert plain.status_code == 201, plain.text
    response = await import_file(
        app, anchor_principal(anchor["id"]), csv_text([csv_row("CSV-1")]), "text/csv"
    )
    assert [e["field"] for e in response.json()["errors"]] == ["requirements.0.code", "requirements.1.code"]


async def test_the_catalogue_copy_is_fed_by_the_enterprises_events(
    app: FastAPI, nats_url: str, new_anchor
) -> None:
    anchor = await new_anchor()
    body = line_body(requirements=[{"code": "food_hygiene_rating"}])
    async with client(app, anchor_principal(anchor["id"])) as http:
        assert set(errors_of(await http.post("/api/v1/demand", json=body))) == {"requirements.0.code"}

    async def stored() -> tuple[int, str] | None:
        async with app.state.database.transaction(write=False) as session:
            row = (
                await session.execute(
                    sa.select(milestone_catalogue.c.version, milestone_catalogue.c.name).where(
                        milestone_catalogue.c.code == "food_hygiene_rating"
                    )
                )
            ).first()
        return None if row is None else (row.version, row.name)

    async with Enterprises(nats_url) as enterprises:
        await enterprises.publish(DEFINITION_PUBLISHED, definition("food_hygiene_rating", 2, "Rating 5"))

        async def arrived() -> bool:
            return await stored() == (2, "Rating 5")

        await wait_until(arrived, timeout=20)
        # An older version arriving late (redelivery, reordering) changes nothing.
        await enterprises.publish(DEFINITION_PUBLISHED, definition("food_hygiene_rating", 1, "Old name"))
        await enterprises.publish(DEFINITION_PUBLISHED, definition("halal_certification", 1, "Halal"))

        async def later_one_arrived() -> bool:
            async with app.state.database.transaction(write=False) as session:
                return bool(
                    await session.scalar(
                        sa.select(sa.func.count()).where(milestone_catalogue.c.code == "halal_certification")
                    )
                )

        await wait_until(later_one_arrived, timeout=20)
    assert await stored() == (2, "Rating 5")
    async with client(app, anchor_principal(anchor["id"])) as http:
        created = await http.post("/api/v1/demand", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["requirements"] == [{"code": "food_hygiene_rating", "min_value_pence": None}]


async def test_the_csv_templates_example_names_only_codes_of_the_seeded_catalogue(
    app: FastAPI, new_anchor
) -> None:
    seeded = {code for code, _, _ in SEEDED_CATALOGUE}
    codes = [part.split("=")[0] for part in CSV_EXAMPLE["requirements"].split(";")]
    assert codes and set(codes) <= seeded
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        template = await http.get("/api/v1/demand/imports/template.csv", params={"example": "true"})
    assert template.status_code == 200
    [example] = list(csv.DictReader(io.StringIO(template.text)))
    response = await import_file(app, anchor_principal(anchor["id"]), template.text, "text/csv")
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1
    assert example["requirements"] == CSV_EXAMPLE["requirements"]
