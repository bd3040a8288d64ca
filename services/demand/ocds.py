"""Demand lines as OCDS 1.1 planning releases, and back.

Export: one release per public line (``tag`` ``planning``, or ``planningUpdate``
after the first version), ``initiationType`` ``tender``, the anchor as buyer, and in
``tender``: status (planned -> ``planned``, tendering -> ``active``), values in GBP,
``mainProcurementCategory``, CPV items, ``tenderPeriod.startDate`` (expected tender
date), ``contractPeriod`` (start, end and ``durationInDays``), ``lots`` with their
values and items, and the extension fields ``suitability`` (``sme``, ``vcse``),
``maxValue``, ``requirements``, ``socialValuePriorities``, ``deliveryArea``.

An awarded line with its award recorded is an award release (``tag`` ``award``, ``awardUpdate``
after a correction): tender status ``complete``, one ``awards`` entry (``active``, the award date,
the contract value, the supplier) and the supplier among the ``parties``.

Import reads the same shape (Find a Tender pipeline notices too): ``ocid`` is the
line's ``external_ref``; CPV codes come from the items' classifications.
"""

from __future__ import annotations

import calendar
import json
import re
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

EXTENSION_DIR = Path(__file__).resolve().parent / "ocds_extension"
EXTENSION_FILES = ("extension.json", "release-schema.json")
"""The project extension (its metadata and its release schema patch), served under the package URI."""
LOTS_EXTENSION = (
    "https://raw.githubusercontent.com/open-contracting-extensions/ocds_lots_extension/v1.1.5/extension.json"
)
"""The OCDS lots extension: ``tender.lots`` and ``items.relatedLot``."""


def extensions(package_base_uri: str) -> list[str]:
    """The extensions the export uses: lots, and the project's own (suitability, maxValue,
    requirements, socialValuePriorities, deliveryArea, reprocurement)."""
    return [LOTS_EXTENSION, f"{package_base_uri.rstrip('/')}/extension/extension.json"]


def extension_file(name: str) -> bytes | None:
    """A file of the project extension, None for any other name."""
    return (EXTENSION_DIR / name).read_bytes() if name in EXTENSION_FILES else None


STATUS_TO_OCDS = {
    "planned": "planned",
    "tendering": "active",
    "awarded": "complete",
    "cancelled": "cancelled",
    "withdrawn": "withdrawn",
}
OCDS_TO_STATUS = {
    "planning": "planned",
    "planned": "planned",
    "active": "tendering",
    "complete": "awarded",
    "cancelled": "cancelled",
    "withdrawn": "withdrawn",
}
PLANNING_TAGS = frozenset({"planning", "planningUpdate"})
DAYS_PER_MONTH = 30.4375


def _amount(pence: int) -> int | float:
    return pence // 100 if pence % 100 == 0 else pence / 100


def _value(pence: int | None) -> dict[str, Any] | None:
    return None if pence is None else {"amount": _amount(pence), "currency": "GBP"}


def _datetime(day: date | str | None) -> str | None:
    if day is None:
        return None
    return f"{str(day)[:10]}T00:00:00Z"


def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    month = month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _classification(code: str) -> dict[str, Any]:
    return {"scheme": "CPV", "id": code[:8]}


# Numbers only Companies House gives out ("SC0..." is left out: Scottish charity numbers look the same).
COMPANY_NUMBER = re.compile(r"^([0-9]{8}|(OC|SO|NI|NC)[0-9]{6}|SC[1-9][0-9]{5})$")


def supplier_identifier(registration_number: str | None) -> dict[str, str] | None:
    """The OCDS identifier of an award's supplier: ``GB-COH`` for a number that can only be a
    Companies House one; None for any other (charity, society, or unsure which), rather than
    guess a scheme."""
    if registration_number and COMPANY_NUMBER.match(registration_number):
        return {"scheme": "GB-COH", "id": registration_number}
    return None


def _award_parts(demand_id: str, award: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The supplier's party and the ``awards`` entry of a line's award."""
    identifier = supplier_identifier(award.get("supplier_registration_number"))
    party_id = f"GB-COH-{identifier['id']}" if identifier else f"{demand_id}-supplier"
    party: dict[str, Any] = {"id": party_id, "name": award["supplier_name"], "roles": ["supplier"]}
    if identifier:
        party["identifier"] = identifier
    entry = {
        "id": f"{demand_id}-award",
        "status": "active",
        "date": _datetime(award["awarded_on"]),
        "value": _value(award["contract_value_pence"]),
        "suppliers": [{"id": party_id, "name": award["supplier_name"]}],
    }
    return party, entry


def release_from_line(
    line: dict[str, Any], anchor: Any, ocid_prefix: str, award: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The OCDS release of a public line (``line`` holds every field, with ``anchor_type``; ``anchor``
    has the anchor's columns as attributes); with ``award``, an award release."""
    demand_id = line["id"]
    party = {"id": anchor.id, "name": anchor.name, "roles": ["buyer"]}
    identifiers = [
        {"scheme": scheme, "id": ident} for scheme, ident in sorted((anchor.identifiers or {}).items())
    ]
    if identifiers:
        party["identifier"] = identifiers[0]
        if len(identifiers) > 1:
            party["additionalIdentifiers"] = identifiers[1:]
    items = [
        {"id": str(i), "classification": _classification(code)} for i, code in enumerate(line["cpv_codes"], 1)
    ]
    lots = []
    for lot in line.get("lots") or []:
        lots.append(
            {"id": lot["lot_id"], "title": lot["title"], "value": _value(lot["estimated_value_pence"])}
        )
        for code in lot.get("cpv_codes") or []:
            items.append(
                {
                    "id": str(len(items) + 1),
                    "classification": _classification(code),
                    "relatedLot": lot["lot_id"],
                }
            )
    tender: dict[str, Any] = {
        "id": demand_id,
        "title": line["title"],
        "status": STATUS_TO_OCDS.get(line["status"], "planned"),
        "value": _value(line["estimated_value_pence"]),
        "mainProcurementCategory": line["category"],
        "items": items,
        "suitability": {"sme": line["suitable_for_sme"], "vcse": line["suitable_for_vcse"]},
    }
    if line.get("description"):
        tender["description"] = line["description"]
    if line.get("min_value_pence") is not None:
        tender["minValue"] = _value(line["min_value_pence"])
    if line.get("max_value_pence") is not None:
        tender["maxValue"] = _value(line["max_value_pence"])
    if line.get("procurement_method"):
        tender["procurementMethod"] = line["procurement_method"]
    if line.get("expected_tender_date"):
        tender["tenderPeriod"] = {"startDate": _datetime(line["expected_tender_date"])}
    start = line.get("contract_start")
    if start:
        period: dict[str, Any] = {"startDate": _datetime(start)}
        if line.get("duration_months"):
            begin = date.fromisoformat(str(start)[:10])
            end = add_months(begin, line["duration_months"])
            period["endDate"] = _datetime(end - timedelta(days=1))
            period["durationInDays"] = (end - begin).days
        tender["contractPeriod"] = period
    elif line.get("duration_months"):
        tender["contractPeriod"] = {"durationInDays": round(line["duration_months"] * DAYS_PER_MONTH)}
    if lots:
        tender["lots"] = lots
    if line.get("requirements"):
        tender["requirements"] = line["requirements"]
    if line.get("social_value_priorities"):
        tender["socialValuePriorities"] = line["social_value_priorities"]
    if line.get("delivery_area"):
        area = line["delivery_area"]
        tender["deliveryArea"] = {
            "label": area["label"],
            "postcodeAreas": area.get("postcode_areas") or [],
            "postcodeDistricts": area.get("postcode_districts") or [],
        }
    if line.get("reprocurement"):
        tender["reprocurement"] = True
    updated = line["updated_at"]
    stamp = updated.isoformat().replace("+00:00", "Z") if isinstance(updated, datetime) else str(updated)
    release = {
        "ocid": f"{ocid_prefix}-{demand_id}",
        "id": f"{demand_id}-{line['version']}",
        "date": stamp,
        "tag": ["planning" if line["version"] == 1 else "planningUpdate"],
        "initiationType": "tender",
        "language": "en",
        "parties": [party],
        "buyer": {"id": anchor.id, "name": anchor.name},
        "tender": tender,
    }
    if award is not None:
        supplier, entry = _award_parts(demand_id, award)
        release["parties"] = [party, supplier]
        release["awards"] = [entry]
        release["tag"] = ["award" if award["version"] == 1 else "awardUpdate"]
    return release


# --- import --------------------------------------------------------------------------------------


class _Errors(list[dict[str, str]]):
    def add(self, field: str, message: str) -> None:
        self.append({"field": field, "message": message})


def _pence(value: Any, field: str, errors: _Errors) -> int | None:
    if not isinstance(value, dict):
        errors.add(field, "must be an object with amount and currency")
        return None
    if value.get("currency", "GBP") != "GBP":
        errors.add(f"{field}.currency", "only GBP values are accepted")
        return None
    amount = value.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float | str):
        errors.add(f"{field}.amount", "must be a number")
        return None
    try:
        pence = Decimal(str(amount)) * 100
    except InvalidOperation:
        errors.add(f"{field}.amount", "must be a number")
        return None
    if not pence.is_finite():
        errors.add(f"{field}.amount", "must be a number")
        return None
    if pence != pence.to_integral_value():
        errors.add(f"{field}.amount", "has more than two decimal places")
        return None
    return int(pence)


def _date(value: Any, field: str, errors: _Errors) -> str | None:
    if not isinstance(value, str) or len(value) < 10:
        errors.add(field, "must be a date-time")
        return None
    try:
        return date.fromisoformat(value[:10]).isoformat()
    except ValueError:
        errors.add(field, "must be a date-time")
        return None


def _cpv_ids(items: list[Any], lot_id: str | None) -> list[str]:
    codes: list[str] = []
    for item in items:
        if not isinstance(item, dict) or item.get("relatedLot") != lot_id:
            continue
        for classification in [item.get("classification"), *(item.get("additionalClassifications") or [])]:
            if isinstance(classification, dict) and str(classification.get("scheme", "")).upper() == "CPV":
                code = str(classification.get("id", ""))
                if code and code not in codes:
                    codes.append(code)
    return codes


BUYER_KEY = "buyer"
"""The key under which :func:`line_from_release` hands the release's buyer to the import."""


def _identifier_pairs(organisation: Any) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    if not isinstance(organisation, dict):
        return found
    candidates = [organisation.get("identifier"), *(organisation.get("additionalIdentifiers") or [])]
    for identifier in candidates:
        if isinstance(identifier, dict) and identifier.get("scheme") and identifier.get("id"):
            found.add((str(identifier["scheme"]), str(identifier["id"])))
    return found


def release_buyer(release: dict[str, Any]) -> dict[str, Any] | None:
    """The release's buyer: its id, name and every identifier given for it (on ``buyer`` itself,
    as OCDS 1.0 did, or on the party it refers to)."""
    buyer = release.get("buyer")
    if not isinstance(buyer, dict) or buyer.get("id") in (None, ""):
        return None
    ident = str(buyer["id"])
    pairs = _identifier_pairs(buyer)
    for party in release.get("parties") or []:
        if isinstance(party, dict) and str(party.get("id")) == ident:
            pairs |= _identifier_pairs(party)
    return {"id": ident, "name": buyer.get("name"), "identifiers": sorted(pairs)}


def buyer_is_anchor(buyer: dict[str, Any], anchor_id: str, anchor_identifiers: dict[str, str]) -> bool:
    """Whether a release's buyer is this anchor: our own export names it by id; another publisher's
    (Find a Tender) by an organisation identifier the anchor holds (``GB-PPON``, ``GB-NHS``...),
    given as an identifier or as an OCDS organisation id ``<scheme>-<id>``."""
    if buyer["id"] == anchor_id:
        return True
    held = {(scheme, str(ident)) for scheme, ident in (anchor_identifiers or {}).items()}
    if held & {(scheme, ident) for scheme, ident in buyer["identifiers"]}:
        return True
    return any(buyer["id"] == f"{scheme}-{ident}" for scheme, ident in held)


def line_from_release(release: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The ``POST /demand`` fields of one planning release, and what is wrong with it; the buyer
    is handed on under :data:`BUYER_KEY` for the import to check against its anchor."""
    errors = _Errors()
    if not isinstance(release, dict):
        errors.add("release", "must be a JSON object")
        return {}, errors
    buyer = release_buyer(release)
    if buyer is None:
        errors.add("buyer", "required: the anchor whose demand this is (buyer.id)")
    tags = release.get("tag")
    if not isinstance(tags, list) or not PLANNING_TAGS & set(tags):
        errors.add("tag", "only planning releases (tag planning or planningUpdate) can be imported")
    ocid = release.get("ocid")
    if not isinstance(ocid, str) or not ocid.strip():
        errors.add("ocid", "required")
    tender = release.get("tender")
    if not isinstance(tender, dict):
        errors.add("tender", "required: the planned procurement")
        return {}, errors
    fields: dict[str, Any] = {"external_ref": ocid}
    if buyer is not None:
        fields[BUYER_KEY] = buyer
    for source, target in (("title", "title"), ("description", "description")):
        if tender.get(source) is not None:
            fields[target] = tender[source]
    if "title" not in fields:
        errors.add("tender.title", "required")
    items = tender.get("items") or []
    if not isinstance(items, list):
        errors.add("tender.items", "must be an array")
        items = []
    fields["cpv_codes"] = _cpv_ids(items, None) or _cpv_ids(
        [{**i, "relatedLot": None} for i in items if isinstance(i, dict)], None
    )
    if not fields["cpv_codes"]:
        errors.add("tender.items", "needs at least one item classified with a CPV code")
    if "value" in tender:
        fields["estimated_value_pence"] = _pence(tender["value"], "tender.value", errors)
    else:
        errors.add("tender.value", "required: the estimated value")
    if tender.get("minValue") is not None:
        fields["min_value_pence"] = _pence(tender["minValue"], "tender.minValue", errors)
    if tender.get("maxValue") is not None:
        fields["max_value_pence"] = _pence(tender["maxValue"], "tender.maxValue", errors)
    if tender.get("mainProcurementCategory") is not None:
        fields["category"] = tender["mainProcurementCategory"]
    else:
        errors.add("tender.mainProcurementCategory", "required: goods, services or works")
    if tender.get("procurementMethod") is not None:
        fields["procurement_method"] = tender["procurementMethod"]
    status = tender.get("status")
    if status is not None:
        if status not in OCDS_TO_STATUS:
            errors.add("tender.status", f"{status!r} cannot be imported as a demand line")
        else:
            fields["status"] = OCDS_TO_STATUS[status]
    period = tender.get("tenderPeriod") or {}
    future = (tender.get("communication") or {}).get("futureNoticeDate")
    if isinstance(period, dict) and period.get("startDate"):
        fields["expected_tender_date"] = _date(period["startDate"], "tender.tenderPeriod.startDate", errors)
    elif future:
        fields["expected_tender_date"] = _date(future, "tender.communication.futureNoticeDate", errors)
    contract = tender.get("contractPeriod") or {}
    if isinstance(contract, dict):
        if contract.get("startDate"):
            fields["contract_start"] = _date(contract["startDate"], "tender.contractPeriod.startDate", errors)
        days = contract.get("durationInDays")
        if days is None and contract.get("startDate") and contract.get("endDate"):
            try:
                days = (
                    date.fromisoformat(str(contract["endDate"])[:10])
                    - date.fromisoformat(str(contract["startDate"])[:10])
                ).days + 1
            except ValueError:
                errors.add("tender.contractPeriod.endDate", "must be a date-time")
        if days is not None:
            if isinstance(days, int) and days > 0:
                fields["duration_months"] = max(1, round(days / DAYS_PER_MONTH))
            else:
                errors.add("tender.contractPeriod.durationInDays", "must be a positive whole number of days")
    lots = tender.get("lots") or []
    if isinstance(lots, list) and lots:
        fields["lots"] = []
        for i, lot in enumerate(lots):
            if not isinstance(lot, dict):
                errors.add(f"tender.lots.{i}", "must be an object")
                continue
            lot_id = str(lot.get("id", i + 1))
            fields["lots"].append(
                {
                    "lot_id": lot_id,
                    "title": lot.get("title") or f"Lot {lot_id}",
                    "estimated_value_pence": _pence(lot.get("value"), f"tender.lots.{i}.value", errors)
                    if lot.get("value") is not None
                    else fields.get("estimated_value_pence"),
                    "cpv_codes": _cpv_ids(items, lot_id),
                }
            )
    suitability = tender.get("suitability") or {}
    if isinstance(suitability, dict):
        if suitability.get("sme") is not None:
            fields["suitable_for_sme"] = suitability["sme"]
        if suitability.get("vcse") is not None:
            fields["suitable_for_vcse"] = suitability["vcse"]
    for source, target in (
        ("requirements", "requirements"),
        ("socialValuePriorities", "social_value_priorities"),
    ):
        if tender.get(source) is not None:
            fields[target] = tender[source]
    area = tender.get("deliveryArea")
    if isinstance(area, dict):
        fields["delivery_area"] = {
            "label": area.get("label"),
            "postcode_areas": area.get("postcodeAreas") or [],
            "postcode_districts": area.get("postcodeDistricts") or [],
        }
    if tender.get("reprocurement") is not None:
        fields["reprocurement"] = tender["reprocurement"]
    return fields, list(errors)


def package_parts(*, uri: str, publisher: str, published: datetime) -> tuple[str, str]:
    """The text before and after the releases of a release package (to stream the releases)."""
    stamp = published.isoformat().replace("+00:00", "Z")
    head = json.dumps(
        {
            "uri": uri,
            "version": "1.1",
            "extensions": extensions(uri),
            "publishedDate": stamp,
            "publisher": {"name": publisher},
        }
    )
    return head[:-1] + ', "releases": [', "]}"
