"""Bulk imports (CSV, JSON lines, OCDS) and the OCDS export, through the API."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from services.demand import imports
from services.demand.imports import CSV_COLUMNS
from services.demand.service import imports as import_service
from services.demand.settings import DemandSettings
from services.demand.tests.conftest import (
    INTEGRATOR,
    MENTOR,
    REPO_ROOT,
    anchor_principal,
    enterprise_principal,
    line_body,
    outbox_events,
)
from shared.problems import Problem
from shared.testing.apps import STAFF, client

OCDS_DIR = REPO_ROOT / "tests" / "data" / "ocds"

postgres_only = pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)


def ocds_validator() -> Draft4Validator:
    release = json.loads((OCDS_DIR / "release-schema.json").read_text())
    package = json.loads((OCDS_DIR / "release-package-schema.json").read_text())
    registry = Registry().with_resource(
        release["id"], Resource.from_contents(release, default_specification=DRAFT4)
    )
    return Draft4Validator(package, registry=registry, format_checker=Draft4Validator.FORMAT_CHECKER)


def csv_text(rows: list[dict[str, str]], columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue()


def csv_row(ref: str, **overrides: str) -> dict[str, str]:
    row = {
        "external_ref": ref,
        "title": f"Grounds maintenance {ref}",
        "description": "Parks and verges.\nTwo cuts a month, April to October.",  # a line break in a cell
        "cpv_codes": "77310000-6;77311000",
        "estimated_value_pence": "12000000",
        "min_value_pence": "10000000",
        "max_value_pence": "15000000",
        "category": "services",
        "expected_tender_date": "2027-01-15",
        "contract_start": "2027-04-01",
        "duration_months": "24",
        "suitable_for_sme": "yes",
        "suitable_for_vcse": "true",
        "status": "planned",
        "visibility": "public",
        "requirements": "public_liability_insurance=500000000;health_safety_policy",
        "social_value_priorities": "local_employment;green_spaces",
        "delivery_area": "Bradford",
        "delivery_area.postcode_areas": "BD",
        "delivery_area.postcode_districts": "LS28",
        "lots": '[{"lot_id": "N", "title": "North parks", "estimated_value_pence": 6000000}]',
    }
    row.update(overrides)
    return row


async def import_file(
    app: FastAPI, principal: Any, body: str | bytes, media_type: str, anchor_id: str | None = None
) -> Any:
    async with client(app, principal) as http:
        return await http.post(
            "/api/v1/demand/imports",
            params={"anchor_id": anchor_id} if anchor_id else None,
            content=body.encode() if isinstance(body, str) else body,
            headers={"Content-Type": media_type},
        )


async def all_lines(app: FastAPI) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    async with client(app, STAFF) as http:
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/api/v1/demand", params=params)).json()
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items


async def test_csv_import_creates_lines_with_every_column_read(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    body = csv_text([csv_row("GM-1"), csv_row("GM-2", visibility="aggregate_only"), csv_row("GM-3", lots="")])
    response = await import_file(app, anchor_principal(anchor["id"]), body, "text/csv")
    assert response.status_code == 200, response.text
    assert response.json() == {"format": "csv", "rows": 3, "created": 3, "updated": 0, "unchanged": 0}
    lines = {line["external_ref"]: line for line in await all_lines(app)}
    line = lines["GM-1"]
    assert line["description"] == "Parks and verges.\nTwo cuts a month, April to October."
    assert line["cpv_codes"] == ["77310000-6", "77311000"]
    assert (line["estimated_value_pence"], line["min_value_pence"], line["max_value_pence"]) == (
        12_000_000,
        10_000_000,
        15_000_000,
    )
    assert line["suitable_for_sme"] is True and line["duration_months"] == 24
    assert line["requirements"] == [
        {"code": "public_liability_insurance", "min_value_pence": 500_000_000},
        {"code": "health_safety_policy", "min_value_pence": None},
    ]
    assert line["delivery_area"] == {
        "label": "Bradford",
        "postcode_areas": ["BD"],
        "postcode_districts": ["LS28"],
    }
    assert line["lots"] == [
        {"lot_id": "N", "title": "North parks", "estimated_value_pence": 6_000_000, "cpv_codes": []}
    ]
    assert lines["GM-2"]["visibility"] == "aggregate_only" and lines["GM-3"]["lots"] == []
    published = [e for e in await outbox_events(app) if e["type"] == "demand.item.published.v1"]
    assert sorted(e["data"]["external_ref"] for e in published) == [
        "GM-1",
        "GM-3",
    ]  # never the aggregate-only one


async def test_importing_the_same_file_twice_changes_nothing(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    body = csv_text([csv_row(f"GM-{i}") for i in range(5)])
    first = await import_file(app, anchor_principal(anchor["id"]), body, "text/csv")
    events_after_first = await outbox_events(app)
    lines_after_first = await all_lines(app)
    second = await import_file(app, anchor_principal(anchor["id"]), body, "text/csv")
    assert first.json()["created"] == 5
    assert second.status_code == 200
    assert second.json() == {"format": "csv", "rows": 5, "created": 0, "updated": 0, "unchanged": 5}
    assert await outbox_events(app) == events_after_first
    assert await all_lines(app) == lines_after_first


async def test_reimport_with_changes_updates_those_lines_and_keeps_history(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    principal = anchor_principal(anchor["id"])
    await import_file(app, principal, csv_text([csv_row("A"), csv_row("B")]), "text/csv")
    changed = csv_text([csv_row("A"), csv_row("B", status="tendering", title="Grounds, retendered")])
    response = await import_file(app, principal, changed, "text/csv")
    assert response.json() == {"format": "csv", "rows": 2, "created": 0, "updated": 1, "unchanged": 1}
    line = next(x for x in await all_lines(app) if x["external_ref"] == "B")
    async with client(app, principal) as http:
        history = (await http.get(f"/api/v1/demand/{line['id']}/history")).json()["items"]
    assert [(v["version"], v["change"]) for v in history] == [(2, "imported"), (1, "imported")]
    assert history[0]["changed_fields"] == ["title", "status"]
    updated = [e for e in await outbox_events(app) if e["type"] == "demand.item.updated.v1"]
    assert [(e["data"]["external_ref"], e["data"]["status"]) for e in updated] == [("B", "tendering")]


async def test_bad_rows_are_all_reported_and_nothing_is_written(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    principal = anchor_principal(anchor["id"])
    await import_file(app, principal, csv_text([csv_row("KEEP")]), "text/csv")
    before_lines, before_events = await all_lines(app), await outbox_events(app)
    rows = [
        csv_row("KEEP", title="Would be changed"),  # row 2: good, but must not be written
        csv_row("N1", cpv_codes="77310000;0123"),  # row 3
        csv_row("N2", min_value_pence="20000000"),  # row 4: min above estimate and max
        csv_row("N3", title=""),  # row 5
        csv_row("N4"),  # row 6: good
        csv_row("N4"),  # row 7: the same reference again
        csv_row("N5", duration_months="two years", expected_tender_date="2027-13-01"),  # row 8
        csv_row("N6", lots="[not json"),  # row 9
    ]
    response = await import_file(app, principal, csv_text(rows), "text/csv")
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("import-rejected")
    found = {(e["row"], e["field"]) for e in problem["errors"]}
    assert found == {
        (3, "cpv_codes"),
        (4, "min_value_pence"),
        (4, "estimated_value_pence"),
        (5, "title"),
        (7, "external_ref"),
        (8, "duration_months"),
        (8, "expected_tender_date"),
        (9, "lots"),
    }
    assert all(e["message"] for e in problem["errors"])
    assert problem["errors_total"] == len(problem["errors"]) and problem["rows_read"] == 8
    assert await all_lines(app) == before_lines
    assert await outbox_events(app) == before_events


async def test_rows_that_break_the_lifecycle_are_reported(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    principal = anchor_principal(anchor["id"])
    first = await import_file(app, principal, csv_text([csv_row("A"), csv_row("B")]), "text/csv")
    assert first.status_code == 200
    second = await import_file(
        app, principal, csv_text([csv_row("A"), csv_row("B", status="cancelled")]), "text/csv"
    )
    assert second.json()["updated"] == 1
    response = await import_file(
        app,
        principal,
        csv_text(
            [csv_row("A", status="draft"), csv_row("B", status="cancelled"), csv_row("C", status="awarded")]
        ),
        "text/csv",
    )
    assert response.status_code == 422
    assert {(e["row"], e["field"]) for e in response.json()["errors"]} == {(2, "status"), (4, "status")}


async def test_csv_header_must_name_known_and_required_columns(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    body = "external_ref,title,colour\r\nX,Thing,red\r\n"
    response = await import_file(app, anchor_principal(anchor["id"]), body, "text/csv")
    assert response.status_code == 422
    errors = {(e["row"], e["field"]) for e in response.json()["errors"]}
    assert {(1, "colour"), (1, "cpv_codes"), (1, "estimated_value_pence"), (1, "category")} <= errors


async def test_template_lists_the_columns_and_its_example_row_imports(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    async with client(app, INTEGRATOR) as http:
        plain = await http.get("/api/v1/demand/imports/template.csv")
        example = await http.get("/api/v1/demand/imports/template.csv", params={"example": "true"})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/csv")
    assert plain.text.strip().split(",") == list(CSV_COLUMNS)
    response = await import_file(app, anchor_principal(anchor["id"]), example.text, "text/csv")
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1


async def test_json_lines_import_with_a_bad_line(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    good = {**line_body(external_ref="J-1")}
    lines = [
        json.dumps(good),
        "",
        "{broken",
        json.dumps([1, 2]),
        json.dumps({**good, "external_ref": "J-2", "x": 1}),
    ]
    response = await import_file(app, STAFF, "\n".join(lines), "application/x-ndjson", anchor_id=anchor["id"])
    assert response.status_code == 422
    assert {(e["row"], e["field"]) for e in response.json()["errors"]} == {(3, "row"), (4, "row"), (5, "x")}
    fixed = await import_file(
        app, STAFF, json.dumps(good) + "\n", "application/x-ndjson", anchor_id=anchor["id"]
    )
    assert fixed.json()["created"] == 1


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_import_is_read_as_a_stream_of_small_chunks(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    rows = [csv_row(f"S-{i}", title=f"Ligne n°{i} — café") for i in range(1500)]
    data = csv_text(rows).encode()
    async with client(app, anchor_principal(anchor["id"])) as http:
        response = await http.post(
            "/api/v1/demand/imports", content=chunks(data, 997), headers={"Content-Type": "text/csv"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1500
    titles = {line["title"] for line in await all_lines(app)}
    assert len(titles) == 1500 and "Ligne n°7 — café" in titles


async def test_who_may_import(app: FastAPI, new_anchor) -> None:
    mine, theirs = await new_anchor(), await new_anchor()
    body = csv_text([csv_row("A")])
    for principal in (enterprise_principal(str(uuid.uuid4())), MENTOR, INTEGRATOR):
        assert (await import_file(app, principal, body, "text/csv")).status_code == 403
    assert (
        await import_file(app, anchor_principal(mine["id"]), body, "text/csv", anchor_id=theirs["id"])
    ).status_code == 403
    missing = await import_file(app, STAFF, body, "text/csv")
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "anchor_id"
    wrong_type = await import_file(app, STAFF, body, "text/plain", anchor_id=mine["id"])
    assert wrong_type.status_code == 415
    assert (await import_file(app, STAFF, body, "text/csv", anchor_id=mine["id"])).status_code == 200
    assert [line["anchor_id"] for line in await all_lines(app)] == [mine["id"]]


async def test_not_utf8_is_refused(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    body = csv_text([csv_row("A", title="caf\u00e9")]).encode("latin-1")
    response = await import_file(app, anchor_principal(anchor["id"]), body, "text/csv")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"


def planning_release(ocid: str, **tender: Any) -> dict[str, Any]:
    base = {
        "id": "t-1",
        "title": "Cleaning of community hubs",
        "status": "planned",
        "value": {"amount": 250000.5, "currency": "GBP"},
        "minValue": {"amount": 200000, "currency": "GBP"},
        "mainProcurementCategory": "services",
        "items": [
            {"id": "1", "classification": {"scheme": "CPV", "id": "90910000"}},
            {"id": "2", "classification": {"scheme": "CPV", "id": "90911200"}, "relatedLot": "L2"},
        ],
        "tenderPeriod": {"startDate": "2027-03-01T00:00:00Z"},
        "contractPeriod": {"startDate": "2027-07-01T00:00:00Z", "durationInDays": 730},
        "lots": [
            {"id": "L1", "title": "East hubs", "value": {"amount": 100000, "currency": "GBP"}},
            {"id": "L2", "title": "West hubs", "value": {"amount": 150000.5, "currency": "GBP"}},
        ],
        "suitability": {"sme": True, "vcse": True},
    }
    base.update(tender)
    return {
        "ocid": ocid,
        "id": f"{ocid}-planning",
        "date": "2026-11-01T00:00:00Z",
        "tag": ["planning"],
        "initiationType": "tender",
        "tender": base,
    }


def package(*releases: dict[str, Any]) -> str:
    return json.dumps(
        {
            "uri": "https://example.org/packages/1",
            "version": "1.1",
            "publishedDate": "2026-11-01T00:00:00Z",
            "publisher": {"name": "Leeds City Council"},
            "releases": list(releases),
        }
    )


async def test_ocds_planning_releases_import_and_other_releases_are_refused(app: FastAPI, new_anchor) -> None:
    anchor = await new_anchor()
    principal = anchor_principal(anchor["id"])
    tender_notice = planning_release("ocds-x-3") | {"tag": ["tender"]}
    bad = await import_file(
        app,
        principal,
        package(
            planning_release("ocds-x-1"),
            tender_notice,
            planning_release("ocds-x-4", value={"amount": 1, "currency": "EUR"}),
        ),
        "application/json",
    )
    assert bad.status_code == 422
    assert {(e["row"], e["field"]) for e in bad.json()["errors"]} == {
        (2, "tag"),
        (3, "tender.value.currency"),
    }
    good = await import_file(
        app,
        principal,
        package(planning_release("ocds-x-1"), planning_release("ocds-x-2", status="active")),
        "application/json",
    )
    assert good.status_code == 200, good.text
    assert good.json() == {"format": "ocds", "rows": 2, "created": 2, "updated": 0, "unchanged": 0}
    lines = {line["external_ref"]: line for line in await all_lines(app)}
    line = lines["ocds-x-1"]
    assert line["estimated_value_pence"] == 25_000_050 and line["min_value_pence"] == 20_000_000
    assert line["cpv_codes"] == ["90910000"] and line["duration_months"] == 24
    assert line["expected_tender_date"] == "2027-03-01" and line["contract_start"] == "2027-07-01"
    assert [(lot["lot_id"], lot["estimated_value_pence"], lot["cpv_codes"]) for lot in line["lots"]] == [
        ("L1", 10_000_000, []),
        ("L2", 15_000_050, ["90911200"]),
    ]
    assert line["suitable_for_vcse"] and line["status"] == "planned"
    assert lines["ocds-x-2"]["status"] == "tendering"
    again = await import_file(
        app,
        principal,
        package(planning_release("ocds-x-1"), planning_release("ocds-x-2", status="active")),
        "application/json",
    )
    assert again.json()["unchanged"] == 2


async def test_ocds_export_validates_against_the_ocds_schema_and_imports_back(
    app: FastAPI, new_anchor
) -> None:
    buyer = await new_anchor(name="Leeds Teaching Hospitals", type="nhs_trust")
    await new_anchor()
    async with client(app, STAFF) as http:
        await http.patch(
            f"/api/v1/anchors/{buyer['id']}",
            json={"identifiers": {"GB-NHS": "RR8", "GB-PPON": "PABC-1234-DEFG"}},
        )
    principal = anchor_principal(buyer["id"])
    async with client(app, principal) as http:
        for body in (
            line_body(
                external_ref="E-1",
                min_value_pence=40_000_000,
                max_value_pence=60_000_000,
                procurement_method="open",
            ),
            line_body(
                external_ref="E-2",
                status="tendering",
                lots=[{"title": "Lot A", "estimated_value_pence": 1_000_050, "cpv_codes": ["55521200"]}],
                expected_tender_date=None,
                contract_start=None,
            ),
            line_body(external_ref="E-3", visibility="aggregate_only"),
            line_body(external_ref="E-4", status="draft"),
        ):
            assert (await http.post("/api/v1/demand", json=body)).status_code == 201
    async with client(app, INTEGRATOR) as http:
        response = await http.get("/api/v1/demand/ocds")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    document = response.json()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in ocds_validator().iter_errors(document)]
    assert errors == []
    releases = document["releases"]
    assert len(releases) == 2  # neither the aggregate-only line nor the draft
    first = next(r for r in releases if r["tender"]["status"] == "planned")
    assert first["tag"] == ["planning"] and first["initiationType"] == "tender"
    assert first["tender"]["value"] == {"amount": 480000, "currency": "GBP"}
    assert first["tender"]["minValue"] == {"amount": 400000, "currency": "GBP"}
    assert first["tender"]["items"][0]["classification"] == {"scheme": "CPV", "id": "55520000"}
    assert first["tender"]["suitability"] == {"sme": True, "vcse": True}
    assert first["parties"][0]["identifier"] == {"scheme": "GB-NHS", "id": "RR8"}
    second = next(r for r in releases if r["tender"]["status"] == "active")
    assert second["tender"]["lots"][0]["value"] == {"amount": 10000.5, "currency": "GBP"}

    other = await new_anchor(name="Importer")
    back = await import_file(app, anchor_principal(other["id"]), response.content, "application/json")
    assert back.status_code == 200, back.text
    assert back.json()["created"] == 2
    copies = [line for line in await all_lines(app) if line["anchor_id"] == other["id"]]
    originals = [
        line
        for line in await all_lines(app)
        if line["anchor_id"] == buyer["id"] and line["visibility"] == "public" and line["status"] != "draft"
    ]
    compared = (
        "title", "description", "cpv_codes", "estimated_value_pence", "min_value_pence", "category", "status",
        "expected_tender_date", "contract_start", "duration_months", "suitable_for_sme", "requirements",
        "social_value_priorities", "delivery_area", "procurement_method",
    )  # fmt: skip

    def key(line: dict[str, Any]) -> tuple:
        return tuple(json.dumps(line[f], sort_keys=True) for f in compared)

    assert sorted(map(key, copies)) == sorted(
        map(key, [{**o, "cpv_codes": [c[:8] for c in o["cpv_codes"]]} for o in originals])
    )


@pytest.mark.parametrize("body", ['{"uri": "x", "releases": [', "[1, 2]", '{"uri": "x"}', "not json"])
async def test_broken_ocds_package_is_refused(app: FastAPI, new_anchor, body: str) -> None:
    anchor = await new_anchor()
    response = await import_file(app, anchor_principal(anchor["id"]), body, "application/json")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"


@postgres_only
async def test_an_import_does_not_read_again_the_lines_it_has_written(
    app: FastAPI, settings: DemandSettings, new_anchor
) -> None:
    """The lookup of each batch's existing lines once read every line of the anchor written so
    far by the import itself: PostgreSQL's statistics cannot see a transaction's own new lines,
    so the planner took the anchor for a small one and scanned its lines to filter the refs (at
    100,000 rows some 10 million lines read, each compared with 500 refs). Counted here in the
    import's transaction."""
    for _ in range(5):  # other anchors with small catalogues, and the importing one
        other = await new_anchor()
        await import_file(
            app, STAFF, csv_text([csv_row(f"X-{n}") for n in range(20)]), "text/csv", other["id"]
        )
    anchor = await new_anchor()
    old = [csv_row(f"OLD-{n}") for n in range(20)]
    assert (await import_file(app, STAFF, csv_text(old), "text/csv", anchor["id"])).status_code == 200
    async with app.state.database.engine.connect() as conn:
        await conn.execute(sa.text("ANALYZE demand_lines"))

    new = 3000
    rows = [csv_row(f"OLD-{n}", title="Grounds, retendered") for n in range(20)]
    rows += [csv_row(f"NEW-{n}") for n in range(new)]
    small_batches = settings.model_copy(update={"import_batch_size": 250})
    async with app.state.database.transaction() as session:
        body = chunks(csv_text(rows).encode(), 64 * 1024)
        counts = await import_service.import_lines(
            session, STAFF, anchor["id"], imports.csv_rows(body), small_batches
        )
        # Lines read from demand_lines by scans other than the primary key's (the foreign keys
        # of the CPV codes look up each new line by id).
        read = await session.scalar(
            sa.text(
                "SELECT pg_stat_get_xact_tuples_returned('demand_lines'::regclass)"
                " + (SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index"
                "    WHERE indrelid = 'demand_lines'::regclass AND NOT indisprimary)"
            )
        )
    assert (counts.created, counts.updated) == (new, 20)
    # Each batch may read the anchor's 20 earlier lines (and the versions this import made of
    # them), never the lines the import wrote: that read some 250 x 13 x 12 / 2 = 19,500 here.
    assert read < new, f"the import's lookups read {read} index entries or rows of demand_lines"


@postgres_only
async def test_a_line_made_with_one_of_the_refs_while_the_import_runs_fails_it(
    app: FastAPI, settings: DemandSettings, new_anchor
) -> None:
    """An import looks up only the lines its anchor had when it began: a line another request
    creates meanwhile with one of the file's refs makes the import a conflict, nothing written."""
    anchor = await new_anchor()
    late_row = csv_text([csv_row("LATE")]).split("\r\n", 1)[1]  # without the header

    async def body() -> AsyncIterator[bytes]:
        yield csv_text([csv_row(f"A-{n}") for n in range(10)]).encode()  # two batches written
        async with client(app, STAFF) as http:
            made = await http.post(
                "/api/v1/demand", json=line_body(anchor_id=anchor["id"], external_ref="LATE")
            )
        assert made.status_code == 201, made.text
        yield late_row.encode()

    small_batches = settings.model_copy(update={"import_batch_size": 5})
    with pytest.raises(Problem) as rejected:
        async with app.state.database.transaction() as session:
            await import_service.import_lines(
                session, STAFF, anchor["id"], imports.csv_rows(body()), small_batches
            )
    assert rejected.value.status == 409
    assert [line["external_ref"] for line in await all_lines(app)] == ["LATE"]


@pytest.mark.parametrize(
    ("body", "media_type"),
    [
        ("[" * 10_000 + "]" * 10_000 + "\n", "application/x-ndjson"),
        ('{"lots": ' + "[" * 10_000 + "]" * 10_000 + "}\n", "application/x-ndjson"),
        ('{"releases": [' + "[" * 100_000 + "]" * 100_000 + "]}", "application/json"),
        ('{"releases": ' + "[" * 100_000, "application/json"),
    ],
)
async def test_deeply_nested_json_is_a_422_problem_not_a_500(
    app: FastAPI, new_anchor, body: str, media_type: str
) -> None:
    anchor = await new_anchor()
    response = await import_file(app, STAFF, body, media_type, anchor_id=anchor["id"])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"]


async def test_the_openapi_document_states_the_415_an_import_of_another_type_gets(
    staff_http: httpx.AsyncClient, app: FastAPI
) -> None:
    async with staff_http as http:
        refused = await http.post(
            "/api/v1/demand/imports", content=b"<xml/>", headers={"content-type": "application/xml"}
        )
    assert refused.status_code == 415
    responses = app.openapi()["paths"]["/api/v1/demand/imports"]["post"]["responses"]
    assert "application/problem+json" in responses["415"]["content"]
