"""Request and response models of the demand API (the HTTP contract).

Money is integer pence, dates ``YYYY-MM-DD``, times RFC 3339 UTC.

``delivery_area`` says where a contract is delivered: a human ``label`` and, to
make it machine-readable, UK postcode ``postcode_areas`` (the letters, ``LS``) and
``postcode_districts`` (``LS6``). Both lists empty means "anywhere" (remote or
national delivery). Matching compares an enterprise's postcode with them; the
pipeline groups lines by the one postcode area they cover (``LS``), ``multiple``
when they cover several, ``anywhere`` when they name none.

Longer than 500 lines on purpose: a line's create, change, import and answer models share
their validators and field descriptions, and read best as the one contract they are.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from services.demand import cpv
from services.demand.pipeline.cells import (
    ANYWHERE,
    MULTIPLE,
    VALUE_BAND_NAMES,
    VIEW_DIMS,
    ViewParams,
    quarter_of,
)
from services.demand.repository import LineFilters
from services.demand.vocabulary import (
    ANCHOR_TYPES,
    STATUSES,
    AnchorType,
    Category,
    Change,
    ImportFormat,
    ProcurementMethod,
    QuarterBasis,
    Status,
    Visibility,
)
from shared.http import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, FromRow
from shared.problems import field_errors

# Sane ranges for the numbers and dates of a demand line, enforced on every way in (API, imports,
# OCDS input) so that no stored line can break a sum, a snapshot or the OCDS export.
MAX_PENCE = 10**13  # £100 billion: above any single public contract
EARLIEST_DATE = date(2000, 1, 1)
LATEST_DATE = date(2100, 12, 31)
MAX_DURATION_MONTHS = 240
Pence = Annotated[int, Field(ge=0, le=MAX_PENCE)]
LineDate = Annotated[date, Field(ge=EARLIEST_DATE, le=LATEST_DATE)]

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Code = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
MilestoneCode = Code

POSTCODE_AREA = re.compile(r"^[A-Z]{1,2}$")
POSTCODE_DISTRICT = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")


def _unique(values: list[Any], what: str) -> list[Any]:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is listed twice")
        seen.add(value)
    return values


def _cpv_list(values: list[str]) -> list[str]:
    for value in values:
        error = cpv.cpv_error(value)
        if error:
            raise ValueError(error)
    return _unique(values, "CPV code")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- anchors -------------------------------------------------------------------------------------

IDENTIFIER_FORMATS = {
    "GB-PPON": (re.compile(r"^P[A-Z0-9]{3}-[A-Z0-9]{4}-[A-Z0-9]{4}$"), "PXXX-XXXX-XXXX"),
    "GB-COH": (re.compile(r"^([0-9]{8}|[A-Z]{2}[0-9]{6})$"), "8 digits, or 2 letters and 6 digits"),
    "GB-NHS": (re.compile(r"^[A-Z0-9]{3,6}$"), "an ODS code of 3 to 6 letters and digits"),
}


def _identifiers(value: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for scheme, ident in value.items():
        if scheme not in IDENTIFIER_FORMATS:
            raise ValueError(
                f"unknown identifier scheme {scheme!r}: use one of {', '.join(IDENTIFIER_FORMATS)}"
            )
        pattern, shape = IDENTIFIER_FORMATS[scheme]
        normalised = ident.strip().upper()
        if not pattern.match(normalised):
            raise ValueError(f"{scheme} {ident!r} is not well formed: expected {shape}")
        out[scheme] = normalised
    return out


class AnchorCreate(StrictModel):
    name: Text
    type: AnchorType
    identifiers: dict[str, str] = Field(
        default_factory=dict, description="by scheme: GB-PPON, GB-COH (Companies House), GB-NHS (ODS code)"
    )
    annual_third_party_spend_pence: Pence | None = None

    _check_identifiers = field_validator("identifiers")(_identifiers)


class AnchorPatch(StrictModel):
    name: Text | None = None
    type: AnchorType | None = None
    identifiers: dict[str, str] | None = None
    annual_third_party_spend_pence: Pence | None = None

    _check_identifiers = field_validator("identifiers")(lambda v: None if v is None else _identifiers(v))


class AnchorOut(FromRow):
    id: str
    name: str
    type: AnchorType
    identifiers: dict[str, str]
    annual_third_party_spend_pence: int | None
    version: int
    created_at: datetime
    updated_at: datetime


# --- demand lines --------------------------------------------------------------------------------


class Lot(StrictModel):
    lot_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None = (
        Field(None, description="unique within the line; numbered 1, 2... when left out")
    )
    title: Text
    estimated_value_pence: Pence
    cpv_codes: list[str] = Field(default_factory=list, max_length=20)

    _check_cpv = field_validator("cpv_codes")(_cpv_list)


class Requirement(StrictModel):
    code: MilestoneCode = Field(description="a readiness milestone code, e.g. public_liability_insurance")
    min_value_pence: Pence | None = Field(None, description="the evidenced amount needed, e.g. cover")


class DeliveryArea(StrictModel):
    label: Text = Field(description="where, in words: 'Leeds', 'West Yorkshire', 'Remote'")
    postcode_areas: list[str] = Field(default_factory=list, max_length=50, description="e.g. ['LS', 'BD']")
    postcode_districts: list[str] = Field(default_factory=list, max_length=200, description="e.g. ['LS6']")

    @field_validator("postcode_areas")
    @classmethod
    def _areas(cls, values: list[str]) -> list[str]:
        out = [v.strip().upper() for v in values]
        for value in out:
            if not POSTCODE_AREA.match(value):
                raise ValueError(f"{value!r} is not a postcode area (one or two letters, e.g. LS)")
        return _unique(out, "postcode area")

    @field_validator("postcode_districts")
    @classmethod
    def _districts(cls, values: list[str]) -> list[str]:
        out = [v.strip().upper().replace(" ", "") for v in values]
        for value in out:
            if not POSTCODE_DISTRICT.match(value):
                raise ValueError(f"{value!r} is not a postcode district (e.g. LS6 or EC1A)")
        return _unique(out, "postcode district")

    def areas(self) -> set[str]:
        """Every postcode area the delivery area touches."""
        found = set(self.postcode_areas)
        for district in self.postcode_districts:
            found.add(re.match(r"^[A-Z]+", district).group(0))  # type: ignore[union-attr]
        return found


SocialValuePriority = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class DemandFields(StrictModel):
    """Every field of a demand line an anchor sets (POST, import rows, and a line after a PATCH)."""

    title: Text
    description: Annotated[str, StringConstraints(max_length=10_000)] = ""
    cpv_codes: list[str] = Field(min_length=1, max_length=20, description="the first is the main one")
    estimated_value_pence: Pence
    min_value_pence: Pence | None = None
    max_value_pence: Pence | None = None
    category: Category
    procurement_method: ProcurementMethod | None = None
    expected_tender_date: LineDate | None = None
    contract_start: LineDate | None = None
    duration_months: int | None = Field(None, ge=1, le=MAX_DURATION_MONTHS)
    lots: list[Lot] = Field(default_factory=list, max_length=100)
    suitable_for_sme: bool = False
    suitable_for_vcse: bool = False
    reprocurement: bool = Field(False, description="re-procures an expiring contract")
    status: Status = "planned"
    status_reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None
    visibility: Visibility = "public"
    requirements: list[Requirement] = Field(default_factory=list, max_length=50)
    social_value_priorities: list[SocialValuePriority] = Field(default_factory=list, max_length=20)
    delivery_area: DeliveryArea | None = None
    external_ref: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None
    ) = None

    _check_cpv = field_validator("cpv_codes")(_cpv_list)

    @field_validator("social_value_priorities")
    @classmethod
    def _priorities(cls, values: list[str]) -> list[str]:
        return _unique(values, "priority")

    def cross_field_errors(self) -> list[dict[str, str]]:
        """Rules between fields, each naming the field at fault."""
        errors: list[dict[str, str]] = []
        low, high, estimate = self.min_value_pence, self.max_value_pence, self.estimated_value_pence
        if low is not None and high is not None and low > high:
            errors.append({"field": "min_value_pence", "message": "must not be more than max_value_pence"})
        if low is not None and estimate < low:
            errors.append(
                {"field": "estimated_value_pence", "message": "must not be less than min_value_pence"}
            )
        if high is not None and estimate > high:
            errors.append(
                {"field": "estimated_value_pence", "message": "must not be more than max_value_pence"}
            )
        if (
            self.expected_tender_date is not None
            and self.contract_start is not None
            and self.expected_tender_date > self.contract_start
        ):
            errors.append({"field": "expected_tender_date", "message": "must not be after contract_start"})
        lot_ids: set[str] = set()
        for i, lot in enumerate(self.lots):
            if lot.estimated_value_pence > estimate:
                errors.append(
                    {
                        "field": f"lots.{i}.estimated_value_pence",
                        "message": "a lot must not be worth more than the whole line's estimated_value_pence",
                    }
                )
            if lot.lot_id is not None:
                if lot.lot_id in lot_ids:
                    errors.append(
                        {"field": f"lots.{i}.lot_id", "message": f"lot_id {lot.lot_id!r} is used twice"}
                    )
                lot_ids.add(lot.lot_id)
        codes: set[str] = set()
        for i, requirement in enumerate(self.requirements):
            if requirement.code in codes:
                errors.append(
                    {"field": f"requirements.{i}.code", "message": f"{requirement.code} is listed twice"}
                )
            codes.add(requirement.code)
        return errors

    def numbered_lots(self) -> list[Lot]:
        """The lots with every ``lot_id`` filled in (1, 2... for the unnamed, skipping taken ones)."""
        taken = {lot.lot_id for lot in self.lots if lot.lot_id is not None}
        counter = 0
        out = []
        for lot in self.lots:
            if lot.lot_id is None:
                counter += 1
                while str(counter) in taken:
                    counter += 1
                lot = lot.model_copy(update={"lot_id": str(counter)})
            out.append(lot)
        return out


class DemandCreate(DemandFields):
    anchor_id: str | None = Field(
        None, description="staff: the anchor the line belongs to; anchors: themselves"
    )


class DemandPatch(StrictModel):
    """A JSON merge patch: fields present are set, ``null`` clears an optional field."""

    title: Text | None = None
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    cpv_codes: list[str] | None = None
    estimated_value_pence: int | None = None
    min_value_pence: int | None = None
    max_value_pence: int | None = None
    category: Category | None = None
    procurement_method: ProcurementMethod | None = None
    expected_tender_date: date | None = None
    contract_start: date | None = None
    duration_months: int | None = None
    lots: list[Lot] | None = None
    suitable_for_sme: bool | None = None
    suitable_for_vcse: bool | None = None
    reprocurement: bool | None = None
    status: Status | None = None
    status_reason: str | None = None
    visibility: Visibility | None = None
    requirements: list[Requirement] | None = None
    social_value_priorities: list[str] | None = None
    delivery_area: DeliveryArea | None = None
    external_ref: str | None = None


class DemandOut(DemandFields):
    model_config = ConfigDict(extra="ignore")

    id: str
    anchor_id: str
    anchor_type: AnchorType
    version: int
    created_at: datetime
    updated_at: datetime
    stale_since: datetime | None = Field(
        None,
        description="when the stale-lines job found this draft or planned line's expected tender date "
        "passed without an update; an update with a new date (or the tender starting) clears it",
    )


# --- awards --------------------------------------------------------------------------------------

REGISTRATION_NUMBER = re.compile(r"^[A-Z0-9]+$")


class AwardIn(StrictModel):
    """Who won the line and for how much (``PUT /demand/{id}/award`` sets or corrects it)."""

    supplier_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    supplier_registration_number: Annotated[str, StringConstraints(max_length=20)] | None = Field(
        None,
        description="Companies House, charity or society number; stored upper case without spaces",
    )
    enterprise_id: uuid.UUID | None = Field(None, description="the incubated enterprise that won, if known")
    contract_value_pence: Pence
    awarded_on: LineDate = Field(description="the award decision date; not in the future")

    @field_validator("supplier_registration_number", mode="before")
    @classmethod
    def _normalise_number(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = "".join(value.split()).upper() or None
        if isinstance(value, str) and not REGISTRATION_NUMBER.match(value):
            raise ValueError("letters and digits only, e.g. 01234567 or SC123456")
        return value

    def values(self) -> dict[str, Any]:
        """The stored columns of the award."""
        out = self.model_dump(mode="python")
        out["enterprise_id"] = str(self.enterprise_id) if self.enterprise_id else None
        return out


class AwardOut(BaseModel):
    demand_id: str
    supplier_name: str
    supplier_registration_number: str | None
    enterprise_id: str | None
    contract_value_pence: int
    awarded_on: date
    version: int = Field(description="grows with every correction; the award's ETag")
    recorded_at: datetime
    recorded_by: str = Field(description="who first recorded the award (corrections: the line's history)")
    updated_at: datetime


class DemandDetailOut(DemandOut):
    """One line as ``GET /demand/{id}`` answers it: with its award, if any."""

    award: AwardOut | None = None


class DemandVersionOut(FromRow):
    """A version of a line: a kept ``demand_line_versions`` row (its ``data`` is the line)."""

    version: int
    change: Change
    changed_at: datetime
    actor: str
    actor_role: str
    changed_fields: list[str]
    line: DemandOut = Field(validation_alias="data")


class ImportResult(FromRow):
    format: ImportFormat
    rows: int
    created: int
    updated: int
    unchanged: int


# --- pipeline ------------------------------------------------------------------------------------


class PipelineFigures(BaseModel):
    count: int | None = Field(description="demand lines")
    total_value_pence: int | None
    annualised_value_pence: int | None = Field(
        description="value per year of contract: value x 12 / max(duration_months, 12)"
    )
    anchors: int | None = Field(description="distinct anchors")
    vcse_share: float | None = Field(description="share of the lines suitable for VCSEs, 0..1")
    sme_share: float | None
    suppressed: bool = Field(
        description="always false: confidential demand is left out of a figure that cannot hold it, "
        "never suppressed (kept for existing clients)"
    )
    confidential_included: bool = Field(
        description="whether the figure includes the released confidential (aggregate-only) demand of "
        "its CPV division x tender quarter blocks; false: public lines only"
    )


class PipelineCell(PipelineFigures):
    key: dict[str, str | bool]


class DisclosureRules(BaseModel):
    min_anchors: int
    dominance_share: float
    p_percent: float | None


class ConfidentialPart(BaseModel):
    included: bool = Field(description="whether this view's figures include confidential demand")
    note: str = Field(description="how confidential demand is counted, for readers")


class PipelineView(BaseModel):
    snapshot_id: str | None
    version: int
    generated_at: datetime | None
    group_by: list[str]
    quarter_of: QuarterBasis
    filters: dict[str, Any]
    disclosure: DisclosureRules
    confidential: ConfidentialPart
    cells: list[PipelineCell]
    totals: PipelineFigures


# --- matching ------------------------------------------------------------------------------------


class ScoreParts(BaseModel):
    cpv: float
    capacity: float
    location: float
    suitability: float
    readiness: float


class MatchItem(BaseModel):
    demand_id: str
    score: float = Field(ge=0, le=1)
    gaps: list[str] = Field(description="requirement codes the enterprise has not verified (or not enough)")
    title: str
    anchor_id: str
    status: Status
    expected_tender_date: date | None
    estimated_value_pence: int
    parts: ScoreParts


class MatchList(BaseModel):
    items: list[MatchItem]


class CandidateItem(BaseModel):
    enterprise_id: str
    name: str
    stage: str
    score: float = Field(ge=0, le=1)
    gaps: list[str]
    parts: ScoreParts


class CandidateList(BaseModel):
    items: list[CandidateItem]


# --- query parameters ----------------------------------------------------------------------------


def _split(values: list[str]) -> list[str]:
    """Values given as repeated parameters, comma-separated, or both."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _refuse(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))


class PageQuery(BaseModel):
    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = None


class AnchorQuery(PageQuery):
    type: AnchorType | None = Field(None, description="an anchor type")
    q: str | None = Field(None, max_length=100, description="part of the name")


def _cpv_prefixes(values: list[str]) -> list[str]:
    prefixes = _split(values)
    _refuse(
        [f"{p!r} is not a CPV code or prefix" for p in prefixes if not (p.isdigit() and 2 <= len(p) <= 8)]
    )
    return prefixes


class OcdsQuery(BaseModel):
    cpv: list[str] = Field(default_factory=list, description="CPV codes or prefixes (division: 2 digits...)")
    anchor_id: str | None = None
    from_: date | None = Field(None, alias="from", description="expected tender date from")
    to: date | None = Field(None, description="expected tender date up to")

    _check_cpv = field_validator("cpv")(_cpv_prefixes)

    def filters(self) -> LineFilters:
        if self.from_ and self.to and self.from_ > self.to:
            raise field_errors([{"field": "from", "message": "must not be after to"}])
        return LineFilters(
            anchor_id=self.anchor_id, cpv_prefixes=tuple(self.cpv), tender_from=self.from_, tender_to=self.to
        )


class LineQuery(PageQuery, OcdsQuery):
    status: list[str] = Field(default_factory=list, description="statuses, comma-separated")
    visibility: Visibility | None = None
    category: Category | None = None
    suitable_for_sme: bool | None = None
    suitable_for_vcse: bool | None = None

    @field_validator("status")
    @classmethod
    def _statuses(cls, values: list[str]) -> list[str]:
        statuses = _split(values)
        _refuse([f"{s!r} is not a status" for s in statuses if s not in STATUSES])
        return statuses

    def filters(self) -> LineFilters:
        base = super().filters()
        return LineFilters(
            anchor_id=base.anchor_id,
            statuses=tuple(self.status),
            visibility=self.visibility,
            category=self.category,
            cpv_prefixes=base.cpv_prefixes,
            tender_from=base.tender_from,
            tender_to=base.tender_to,
            suitable_for_sme=self.suitable_for_sme,
            suitable_for_vcse=self.suitable_for_vcse,
        )


QUARTER_PATTERN = re.compile(r"^(\d{4})-Q([1-4])$")


def _quarter(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if QUARTER_PATTERN.match(value):
        return value
    try:
        return quarter_of(date.fromisoformat(value))
    except ValueError:
        raise ValueError("use a quarter like 2027-Q1 (or a date, for its quarter)") from None


class PipelineQuery(BaseModel):
    """A view of the pipeline as ``GET /pipeline`` asks for it; :meth:`view` is the checked view."""

    group_by: list[str] = Field(default_factory=list, description="dimensions, comma-separated")
    quarter_of: QuarterBasis = Field("tender", description="the date a quarter is of")
    from_: str | None = Field(None, alias="from", description="a quarter (2027-Q1) or a date in it")
    to: str | None = Field(None, description="a quarter (2027-Q1) or a date in it")
    cpv: list[str] = Field(default_factory=list, description="CPV divisions (2 digits) or groups (3)")
    anchor_type: list[str] = Field(default_factory=list)
    value_band: list[str] = Field(default_factory=list)
    delivery_area: list[str] = Field(default_factory=list, description="postcode areas, anywhere, multiple")
    suitable_for_vcse: bool | None = None
    suitable_for_sme: bool | None = None

    _check_quarters = field_validator("from_", "to")(_quarter)

    @field_validator("quarter_of", mode="before")
    @classmethod
    def _basis(cls, value: Any) -> Any:
        return value or "tender"

    @field_validator("group_by")
    @classmethod
    def _dims(cls, values: list[str]) -> list[str]:
        dims = _split(values)
        problems = [f"{dim!r} is not one of {', '.join(VIEW_DIMS)}" for dim in dims if dim not in VIEW_DIMS]
        if len(set(dims)) != len(dims):
            problems.append("a dimension is named twice")
        _refuse(problems)
        return dims

    @field_validator("cpv")
    @classmethod
    def _cpv(cls, values: list[str]) -> list[str]:
        prefixes, problems = [], []
        for code in _split(values):
            prefix = cpv.significant(code) if len(code) == 8 and code.isdigit() else code
            if not (prefix.isdigit() and 2 <= len(prefix) <= 3) or prefix[:2] not in cpv.DIVISIONS:
                problems.append(
                    f"{code!r}: the pipeline is filtered by CPV division (2 digits) "
                    "or group (3 digits) of a known division"
                )
            else:
                prefixes.append(prefix)
        _refuse(problems)
        return prefixes

    @field_validator("anchor_type")
    @classmethod
    def _types(cls, values: list[str]) -> list[str]:
        types = _split(values)
        _refuse([f"{value!r} is not an anchor type" for value in types if value not in ANCHOR_TYPES])
        return types

    @field_validator("value_band")
    @classmethod
    def _bands(cls, values: list[str]) -> list[str]:
        bands = _split(values)
        names = ", ".join(VALUE_BAND_NAMES)
        _refuse([f"{value!r} is not one of {names}" for value in bands if value not in VALUE_BAND_NAMES])
        return bands

    @field_validator("delivery_area")
    @classmethod
    def _areas(cls, values: list[str]) -> list[str]:
        areas = [a.upper() if a not in (ANYWHERE, MULTIPLE) else a for a in _split(values)]
        _refuse(
            [
                f"{value!r}: use a postcode area, anywhere or multiple"
                for value in areas
                if value not in (ANYWHERE, MULTIPLE) and not POSTCODE_AREA.match(value)
            ]
        )
        return areas

    def view(self) -> ViewParams:
        if self.from_ and self.to and self.from_ > self.to:
            raise field_errors([{"field": "from", "message": "must not be after to"}])
        return ViewParams(
            group_by=tuple(self.group_by),
            quarter_of=self.quarter_of,
            from_quarter=self.from_,
            to_quarter=self.to,
            cpv=tuple(sorted(set(self.cpv))),
            anchor_type=tuple(sorted(set(self.anchor_type))),
            value_band=tuple(sorted(set(self.value_band))),
            delivery_area=tuple(sorted(set(self.delivery_area))),
            suitable_for_vcse=self.suitable_for_vcse,
            suitable_for_sme=self.suitable_for_sme,
        )


class MatchQuery(BaseModel):
    limit: int | None = Field(None, ge=1)
