"""Events the demand service publishes: their types and payload models (the AsyncAPI source).

Stream ``DEMAND``: public lines only. An aggregate-only or draft line never appears
in an event; a line that stops being public, or is cancelled or withdrawn, gets
``demand.item.withdrawn.v1``; a public line's award, ``demand.item.awarded.v1``.
The one exception is ``demand.item.stale.v1``: it tells a
line's own anchor that its expected tender date passed without an update, drafts and
aggregate-only lines included, so the gateway passes it only to that anchor and staff.
This module imports nothing else of the service, so
anything may import it. Consumed events are handled in :mod:`services.demand.consumers`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.asyncapi import EventSpec
from shared.events import CloudEvent, event_source, event_type, new_event

SERVICE = "demand"
SOURCE = event_source(SERVICE)

ANCHOR_REGISTERED = event_type(SERVICE, "anchor", "registered")
ANCHOR_UPDATED = event_type(SERVICE, "anchor", "updated")
ITEM_PUBLISHED = event_type(SERVICE, "item", "published")
ITEM_UPDATED = event_type(SERVICE, "item", "updated")
ITEM_WITHDRAWN = event_type(SERVICE, "item", "withdrawn")
ITEM_STALE = event_type(SERVICE, "item", "stale")
ITEM_AWARDED = event_type(SERVICE, "item", "awarded")
PIPELINE_PUBLISHED = event_type(SERVICE, "pipeline", "published")
MATCH_FOUND = event_type(SERVICE, "match", "found")


class AnchorPayload(BaseModel):
    anchor_id: str
    version: int  # grows with every change of the anchor
    name: str
    type: str
    identifiers: dict[str, str]


class LotPayload(BaseModel):
    lot_id: str
    title: str
    estimated_value_pence: int
    cpv_codes: list[str]


class RequirementPayload(BaseModel):
    code: str
    min_value_pence: int | None


class DeliveryAreaPayload(BaseModel):
    label: str
    postcode_areas: list[str]
    postcode_districts: list[str]


class DemandItemPayload(BaseModel):
    """A public demand line, whole (state-carrying)."""

    demand_id: str
    version: int
    anchor_id: str
    anchor_type: str
    title: str
    description: str
    cpv_codes: list[str]
    estimated_value_pence: int
    min_value_pence: int | None
    max_value_pence: int | None
    category: str
    expected_tender_date: str | None = Field(description="YYYY-MM-DD")
    contract_start: str | None = Field(description="YYYY-MM-DD")
    duration_months: int | None
    lots: list[LotPayload]
    suitable_for_sme: bool
    suitable_for_vcse: bool
    status: str
    requirements: list[RequirementPayload]
    social_value_priorities: list[str]
    delivery_area: DeliveryAreaPayload | None
    external_ref: str | None


class DemandWithdrawnPayload(BaseModel):
    demand_id: str
    version: int
    anchor_id: str
    status: str
    reason: str


class DemandAwardedPayload(BaseModel):
    """Who won a public line and for how much, as its anchor recorded (or corrected) it."""

    demand_id: str
    version: int = Field(description="the line's version after the award")
    anchor_id: str
    status: str = Field(description="awarded")
    supplier_name: str
    supplier_registration_number: str | None = Field(
        description="Companies House, charity or society number, upper case without spaces"
    )
    enterprise_id: str | None = Field(
        description="the incubated enterprise that won, when the anchor named it"
    )
    contract_value_pence: int
    awarded_on: str = Field(description="YYYY-MM-DD")


class DemandStalePayload(BaseModel):
    """A draft or planned line whose expected tender date passed without an update (its anchor's
    and staff's only: the line may be a draft or aggregate-only)."""

    demand_id: str
    version: int = Field(description="the line's version (marking it stale makes no new version)")
    anchor_id: str
    title: str
    status: str
    visibility: str
    expected_tender_date: str = Field(description="YYYY-MM-DD, the date that passed")
    stale_since: datetime
    left_pipeline: bool = Field(
        description="the line left the pipeline and matching until an update gives it a date again"
    )


class PipelineTotalsPayload(BaseModel):
    count: int | None
    total_value_pence: int | None
    annualised_value_pence: int | None
    anchors: int | None
    vcse_share: float | None
    sme_share: float | None
    suppressed: bool = Field(description="always false (kept for existing consumers)")
    confidential_included: bool = Field(
        False,
        description="the totals include the released confidential (aggregate-only) blocks, as of their "
        "last safe release; false in snapshots published before this field",
    )


class PipelinePublishedPayload(BaseModel):
    snapshot_id: str
    version: int
    generated_at: datetime
    lines_count: int | None = Field(
        description="lines counted in the totals: public lines, and confidential ones as last released"
    )
    totals: PipelineTotalsPayload


class MatchFoundPayload(BaseModel):
    """An incubated enterprise that fits a public line, as the line stood at ``version``."""

    demand_id: str
    version: int = Field(description="the line's version the match was made against")
    anchor_id: str
    enterprise_id: str
    score: float
    gaps: list[str] = Field(description="requirement codes the enterprise has not verified")


PUBLISHED: list[EventSpec] = [
    EventSpec(ANCHOR_REGISTERED, AnchorPayload, "An anchor institution was registered."),
    EventSpec(ANCHOR_UPDATED, AnchorPayload, "An anchor's name, type or identifiers changed."),
    EventSpec(ITEM_PUBLISHED, DemandItemPayload, "A demand line became public (planned or later)."),
    EventSpec(ITEM_UPDATED, DemandItemPayload, "A public demand line changed."),
    EventSpec(
        ITEM_WITHDRAWN,
        DemandWithdrawnPayload,
        "A public demand line was cancelled or withdrawn, or stopped being public.",
    ),
    EventSpec(
        ITEM_AWARDED,
        DemandAwardedPayload,
        "A public demand line was awarded, or its award corrected: the supplier and the contract value.",
    ),
    EventSpec(
        ITEM_STALE,
        DemandStalePayload,
        "A draft or planned line's expected tender date passed without an update (its anchor and "
        "staff only); an update with a new date makes it current again.",
    ),
    EventSpec(
        PIPELINE_PUBLISHED,
        PipelinePublishedPayload,
        "A new snapshot of the aggregated pipeline: changed public figures, and the confidential part "
        "when its cadence released a block.",
    ),
    EventSpec(
        MATCH_FOUND,
        MatchFoundPayload,
        "An incubated enterprise fits a line that was published or changed (staff only).",
    ),
]


def match_event(line: dict[str, Any], candidate: dict[str, Any]) -> CloudEvent:
    payload = MatchFoundPayload(
        demand_id=line["id"],
        version=line["version"],
        anchor_id=line["anchor_id"],
        enterprise_id=candidate["enterprise_id"],
        score=candidate["score"],
        gaps=list(candidate["gaps"]),
    )
    return new_event(MATCH_FOUND, payload, source=SOURCE, subject=line["id"])


def award_event(line: dict[str, Any], award: dict[str, Any]) -> CloudEvent:
    """The ``demand.item.awarded.v1`` of a public line whose award was set or corrected."""
    payload = DemandAwardedPayload(
        demand_id=line["id"],
        version=line["version"],
        anchor_id=line["anchor_id"],
        status=line["status"],
        supplier_name=award["supplier_name"],
        supplier_registration_number=award["supplier_registration_number"],
        enterprise_id=award["enterprise_id"],
        contract_value_pence=award["contract_value_pence"],
        awarded_on=str(award["awarded_on"])[:10],
    )
    return new_event(ITEM_AWARDED, payload, source=SOURCE, subject=line["id"])


def stale_event(line: dict[str, Any]) -> CloudEvent:
    """The ``demand.item.stale.v1`` of a line just marked stale."""
    payload = DemandStalePayload(
        demand_id=line["id"],
        version=line["version"],
        anchor_id=line["anchor_id"],
        title=line["title"],
        status=line["status"],
        visibility=line["visibility"],
        expected_tender_date=str(line["expected_tender_date"])[:10],
        stale_since=line["stale_since"],
        left_pipeline=bool(line["stale_left_pipeline"]),
    )
    return new_event(ITEM_STALE, payload, source=SOURCE, subject=line["id"])


def anchor_event(kind: str, anchor: Any) -> CloudEvent:
    """The event of an anchor (a row or any object with its columns as attributes)."""
    payload = AnchorPayload(
        anchor_id=anchor.id,
        version=anchor.version,
        name=anchor.name,
        type=anchor.type,
        identifiers=dict(anchor.identifiers or {}),
    )
    return new_event(kind, payload, source=SOURCE, subject=anchor.id)


def _listed(line: dict[str, Any] | None) -> bool:
    """Whether consumers hold the line: public, and neither a draft nor closed."""
    return (
        line is not None
        and line["visibility"] == "public"
        and line["status"] not in ("draft", "cancelled", "withdrawn")
    )


def item_payload(line: dict[str, Any]) -> dict[str, Any]:
    """The :class:`DemandItemPayload` of a line, built as a plain dict (imports publish thousands)."""
    area = line.get("delivery_area")
    return {
        "demand_id": line["id"],
        "version": line["version"],
        "anchor_id": line["anchor_id"],
        "anchor_type": line["anchor_type"],
        "title": line["title"],
        "description": line["description"],
        "cpv_codes": list(line["cpv_codes"]),
        "estimated_value_pence": line["estimated_value_pence"],
        "min_value_pence": line.get("min_value_pence"),
        "max_value_pence": line.get("max_value_pence"),
        "category": line["category"],
        "expected_tender_date": _iso(line.get("expected_tender_date")),
        "contract_start": _iso(line.get("contract_start")),
        "duration_months": line.get("duration_months"),
        "lots": [
            {
                "lot_id": lot["lot_id"],
                "title": lot["title"],
                "estimated_value_pence": lot["estimated_value_pence"],
                "cpv_codes": list(lot.get("cpv_codes") or []),
            }
            for lot in line.get("lots") or []
        ],
        "suitable_for_sme": line["suitable_for_sme"],
        "suitable_for_vcse": line["suitable_for_vcse"],
        "status": line["status"],
        "requirements": [
            {"code": r["code"], "min_value_pence": r.get("min_value_pence")}
            for r in line.get("requirements") or []
        ],
        "social_value_priorities": list(line.get("social_value_priorities") or []),
        "delivery_area": {
            "label": area["label"],
            "postcode_areas": list(area.get("postcode_areas") or []),
            "postcode_districts": list(area.get("postcode_districts") or []),
        }
        if area
        else None,
        "external_ref": line.get("external_ref"),
    }


def _iso(value: Any) -> str | None:
    return None if value is None else str(value)[:10]


def _event(kind: str, payload: dict[str, Any], subject: str) -> CloudEvent:
    """A CloudEvent built without re-validating a payload we made ourselves (imports make many)."""
    return CloudEvent.model_construct(
        specversion="1.0",
        id=str(uuid.uuid4()),
        source=SOURCE,
        type=kind,
        time=datetime.now(UTC),
        subject=subject,
        datacontenttype="application/json",
        data=payload,
    )


def line_events(before: dict[str, Any] | None, after: dict[str, Any]) -> list[CloudEvent]:
    """What consumers must hear about a line going from ``before`` to ``after`` (None: created).

    ``after`` holds the whole line with ``anchor_type``; nothing is said about lines that
    consumers never held (aggregate-only, drafts).
    """
    was, now = _listed(before), _listed(after)
    if now:
        kind = ITEM_UPDATED if was else ITEM_PUBLISHED
        return [_event(kind, item_payload(after), after["id"])]
    if was:
        if after["status"] in ("cancelled", "withdrawn"):
            reason = after.get("status_reason") or f"the anchor marked the line {after['status']}"
        else:
            reason = "the line is now shared in aggregate only"
        payload = {
            "demand_id": after["id"],
            "version": after["version"],
            "anchor_id": after["anchor_id"],
            "status": after["status"],
            "reason": reason,
        }
        return [_event(ITEM_WITHDRAWN, payload, after["id"])]
    return []


def pipeline_event(
    snapshot_id: str, version: int, generated_at: datetime, lines_count: int | None, totals: dict[str, Any]
) -> CloudEvent:
    payload = PipelinePublishedPayload(
        snapshot_id=snapshot_id,
        version=version,
        generated_at=generated_at,
        lines_count=lines_count,
        totals=PipelineTotalsPayload.model_validate(totals),
    )
    return new_event(PIPELINE_PUBLISHED, payload, source=SOURCE, subject=snapshot_id)
