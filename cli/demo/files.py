"""The demo's demand as the files anchors send: CSV rows and OCDS 1.1 release packages,
in the shapes ``POST /demand/imports`` reads (``GET /demand/imports/template.csv``)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

CSV_COLUMNS = (
    "external_ref",
    "title",
    "description",
    "cpv_codes",
    "estimated_value_pence",
    "category",
    "procurement_method",
    "expected_tender_date",
    "contract_start",
    "duration_months",
    "suitable_for_sme",
    "suitable_for_vcse",
    "reprocurement",
    "status",
    "visibility",
    "requirements",
    "social_value_priorities",
    "delivery_area",
    "delivery_area.postcode_areas",
    "delivery_area.postcode_districts",
)


def _cell(line: dict[str, Any], column: str) -> str:
    if column == "requirements":
        return ";".join(
            r["code"] if r.get("min_value_pence") is None else f"{r['code']}={r['min_value_pence']}"
            for r in line.get("requirements", [])
        )
    if column.startswith("delivery_area"):
        area = line.get("delivery_area") or {}
        part = column.partition(".")[2] or "label"
        value = area.get(part, "")
        return ";".join(value) if isinstance(value, list) else str(value)
    value = line.get(column)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def csv_file(lines: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in lines:
        writer.writerow([_cell(line, column) for column in CSV_COLUMNS])
    return out.getvalue().encode()


def _gbp(pence: int) -> dict[str, Any]:
    return {"amount": pence // 100 if pence % 100 == 0 else pence / 100, "currency": "GBP"}


def _release(line: dict[str, Any], buyer: str, published: str) -> dict[str, Any]:
    area = line.get("delivery_area") or {}
    tender: dict[str, Any] = {
        "id": line["external_ref"],
        "title": line["title"],
        "description": line.get("description", ""),
        "status": {"planned": "planned", "tendering": "active"}.get(line["status"], "planned"),
        "value": _gbp(line["estimated_value_pence"]),
        "mainProcurementCategory": line["category"],
        "procurementMethod": line.get("procurement_method"),
        "items": [
            {"id": str(i + 1), "classification": {"scheme": "CPV", "id": code}}
            for i, code in enumerate(line["cpv_codes"])
        ],
        "tenderPeriod": {"startDate": f"{line['expected_tender_date']}T00:00:00Z"},
        "contractPeriod": {
            "startDate": f"{line['contract_start']}T00:00:00Z",
            "durationInDays": round(line["duration_months"] * 30.4375),
        },
        "suitability": {"sme": line["suitable_for_sme"], "vcse": line["suitable_for_vcse"]},
        "requirements": line.get("requirements", []),
        "socialValuePriorities": line.get("social_value_priorities", []),
        "deliveryArea": {
            "label": area.get("label"),
            "postcodeAreas": area.get("postcode_areas", []),
            "postcodeDistricts": area.get("postcode_districts", []),
        },
        "reprocurement": line.get("reprocurement", False),
    }
    return {
        "ocid": line["external_ref"],
        "id": f"{line['external_ref']}-planning",
        "date": published,
        "tag": ["planning"],
        "initiationType": "tender",
        "buyer": {"name": buyer},
        "tender": tender,
    }


def ocds_package(buyer: str, lines: list[dict[str, Any]], published: datetime | None = None) -> bytes:
    """An OCDS 1.1 release package of planning releases, one per line."""
    when = (published or datetime(2026, 1, 1, tzinfo=UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    package = {
        "uri": "https://calder.example.org/ocds/demo-pipeline.json",
        "version": "1.1",
        "publishedDate": when,
        "publisher": {"name": buyer},
        "releases": [_release(line, buyer, when) for line in lines],
    }
    return json.dumps(package, indent=1).encode()
