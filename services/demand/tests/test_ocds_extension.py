"""The OCDS export declares the extensions it uses, and validates against OCDS 1.1 with them applied."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from services.demand import ocds
from services.demand.tests.conftest import INTEGRATOR, anchor_principal, line_body
from shared.testing.apps import client

OCDS_DIR = Path("/work/shared/data/ocds")
if not OCDS_DIR.is_dir():  # the copy kept in the repository
    OCDS_DIR = Path(__file__).resolve().parents[3] / "tests" / "data" / "ocds"


def merge_patch(target: Any, patch: Any) -> Any:
    """JSON Merge Patch (RFC 7386), which OCDS uses to apply an extension's release schema."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def extended_validator(extension_patch: dict[str, Any]) -> Draft4Validator:
    release = merge_patch(json.loads((OCDS_DIR / "release-schema.json").read_text()), extension_patch)
    package = json.loads((OCDS_DIR / "release-package-schema.json").read_text())
    registry = Registry().with_resource(
        release["id"], Resource.from_contents(release, default_specification=DRAFT4)
    )
    return Draft4Validator(package, registry=registry, format_checker=Draft4Validator.FORMAT_CHECKER)


async def test_the_export_declares_its_extensions_and_validates_with_them_applied(
    app: FastAPI, new_anchor
) -> None:
    anchor = await new_anchor()
    async with client(app, anchor_principal(anchor["id"])) as http:
        body = line_body(
            max_value_pence=60_000_000,
            reprocurement=True,
            lots=[{"title": "North", "estimated_value_pence": 1_000_000, "cpv_codes": ["55521200"]}],
            delivery_area={"label": "Leeds", "postcode_areas": ["LS"], "postcode_districts": ["LS6"]},
        )
        assert (await http.post("/api/v1/demand", json=body)).status_code == 201
    async with client(app, INTEGRATOR) as http:
        document = (await http.get("/api/v1/demand/ocds")).json()
        extension = await http.get("/api/v1/demand/ocds/extension/extension.json")
        patch = await http.get("/api/v1/demand/ocds/extension/release-schema.json")
        missing = await http.get("/api/v1/demand/ocds/extension/secrets.txt")
    assert document["extensions"] == [
        ocds.LOTS_EXTENSION,
        "https://seedbed.dev/api/v1/demand/ocds/extension/extension.json",
    ]
    assert extension.status_code == 200 and extension.json()["schemas"] == ["release-schema.json"]
    assert "1.1" in extension.json()["compatibility"]
    assert missing.status_code == 404
    tender = document["releases"][0]["tender"]
    declared = set(patch.json()["definitions"]["Tender"]["properties"])
    assert {
        "suitability",
        "maxValue",
        "requirements",
        "socialValuePriorities",
        "deliveryArea",
        "reprocurement",
    } == (declared)
    assert declared <= set(tender)  # the line above uses every one of them
    validator = extended_validator(patch.json())
    assert [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)] == []
    # The extension's schema is not a formality: a field of the wrong shape fails validation.
    broken = copy.deepcopy(document)
    broken["releases"][0]["tender"]["suitability"] = {"sme": "yes"}
    broken["releases"][0]["tender"]["requirements"] = [{"code": "Not A Code"}]
    broken["releases"][0]["tender"]["deliveryArea"]["postcodeAreas"] = ["leeds"]
    paths = {tuple(e.absolute_path) for e in validator.iter_errors(broken)}
    assert ("releases", 0, "tender", "suitability", "sme") in paths
    assert ("releases", 0, "tender", "requirements", 0, "code") in paths
    assert ("releases", 0, "tender", "deliveryArea", "postcodeAreas", 0) in paths


def test_the_shipped_extension_is_the_one_the_export_names() -> None:
    assert json.loads(ocds.extension_file("extension.json") or b"")["name"]["en"] == "Seedbed demand"
    assert ocds.extension_file("../settings.py") is None
