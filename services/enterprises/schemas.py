"""Request and response models of the enterprises API (the HTTP contract).

Longer than 500 lines on purpose: the whole contract of the service in one module, a section per
subject (enterprises, cohorts, the catalogue, milestones, readiness, bids, the impact report), so
that a change to the API is a change to one file, read beside docs/API.md.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.enterprises.identifiers import normalise_postcode
from services.enterprises.vocabulary import (
    AwardCheck,
    BidRole,
    BidStartStatus,
    BidStatus,
    Category,
    LegalForm,
    MilestoneStatus,
    ReportGrouping,
    RequestedStatus,
    SizeClass,
    StageName,
)
from shared import cpv
from shared.http import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, FromRow

MAX_PENCE = 10**15  # ten trillion pounds: far above any real figure, far below int64
MAX_CPV_CODES = 100
CODE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{2,63}$")

Pence = int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Patch(_Strict):
    """A merge patch: only the fields sent change."""

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


def _postcode(value: str | None) -> str | None:
    return None if value is None else normalise_postcode(value)


def _cpv_codes(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if len(value) > MAX_CPV_CODES:
        raise ValueError(f"at most {MAX_CPV_CODES} CPV codes")
    seen: dict[str, str] = {}
    errors = []
    for i, raw in enumerate(value):
        try:
            code = cpv.normalise(raw)
        except ValueError as exc:
            errors.append(f"[{i}] {exc}")
            continue
        seen.setdefault(code[:8], code)
    if errors:
        raise ValueError("; ".join(errors))
    return list(seen.values())


def _website(value: str | None) -> str | None:
    if value is not None and not re.match(r"^https?://[^\s/$.?#][^\s]*$", value):
        raise ValueError("must be an http(s) URL")
    return value


class EnterpriseFields(_Strict):
    """Profile fields shared by create and update."""

    name: str = Field(min_length=1, max_length=200)
    legal_form: LegalForm
    registration_number: str | None = Field(default=None, max_length=30)
    postcode: str = Field(min_length=1, max_length=20, description="UK postcode; stored normalised.")
    cpv_codes: list[str] = Field(default_factory=list, description="CPV codes XXXXXXXX or XXXXXXXX-Y.")
    max_contract_value_pence: int | None = Field(default=None, ge=0, le=MAX_PENCE)
    employees: int | None = Field(default=None, ge=0, le=10_000_000)
    turnover_pence: int | None = Field(default=None, ge=0, le=MAX_PENCE)
    vcse: bool = False
    handles_personal_data: bool = False
    works_with_public: bool = False
    works_with_vulnerable_people: bool = False
    provides_professional_advice: bool = False
    description: str | None = Field(default=None, max_length=5000)
    website: str | None = Field(default=None, max_length=300)

    _normalise_postcode = field_validator("postcode")(_postcode)
    _normalise_cpv = field_validator("cpv_codes")(_cpv_codes)
    _check_website = field_validator("website")(_website)


class EnterpriseCreate(EnterpriseFields):
    stage: StageName = "applicant"
    cohort_id: uuid.UUID | None = None


class EnterpriseUpdate(_Patch):
    """Only the fields sent change; ``null`` clears a nullable field."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    legal_form: LegalForm | None = None
    registration_number: str | None = Field(default=None, max_length=30)
    postcode: str | None = Field(default=None, min_length=1, max_length=20)
    cpv_codes: list[str] | None = None
    max_contract_value_pence: int | None = Field(default=None, ge=0, le=MAX_PENCE)
    employees: int | None = Field(default=None, ge=0, le=10_000_000)
    turnover_pence: int | None = Field(default=None, ge=0, le=MAX_PENCE)
    vcse: bool | None = None
    handles_personal_data: bool | None = None
    works_with_public: bool | None = None
    works_with_vulnerable_people: bool | None = None
    provides_professional_advice: bool | None = None
    description: str | None = Field(default=None, max_length=5000)
    website: str | None = Field(default=None, max_length=300)
    stage: StageName | None = None
    cohort_id: uuid.UUID | None = None

    _normalise_postcode = field_validator("postcode")(_postcode)
    _normalise_cpv = field_validator("cpv_codes")(_cpv_codes)
    _check_website = field_validator("website")(_website)

    @field_validator(
        "name",
        "legal_form",
        "postcode",
        "cpv_codes",
        "vcse",
        "stage",
        "handles_personal_data",
        "works_with_public",
        "works_with_vulnerable_people",
        "provides_professional_advice",
    )
    @classmethod
    def _required_stay_set(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value


class PageQuery(BaseModel):
    """``?limit=&cursor=`` of every list."""

    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Page size.")
    cursor: str | None = Field(None, description="next_cursor of the previous page.")


class EnterpriseQuery(PageQuery):
    """The filters of ``GET /enterprises``."""

    stage: StageName | None = None
    cohort_id: uuid.UUID | None = None
    legal_form: LegalForm | None = None
    cpv: str | None = Field(None, pattern=r"^\d{2,8}$", description="CPV code prefix, e.g. 45 or 4523.")
    q: str | None = Field(None, min_length=1, max_length=200, description="Text in the name.")
    size_class: SizeClass | None = None
    vcse: bool | None = None
    ready: bool | None = Field(None, description="Overall readiness as last announced.")


class HistoryQuery(PageQuery):
    milestone_code: str | None = Field(None, max_length=64)


class Enterprise(FromRow):
    id: uuid.UUID
    name: str
    legal_form: LegalForm
    registration_number: str | None
    postcode: str
    stage: StageName
    cohort_id: uuid.UUID | None
    cpv_codes: list[str]
    max_contract_value_pence: int | None
    employees: int | None
    turnover_pence: int | None
    vcse: bool
    handles_personal_data: bool
    works_with_public: bool
    works_with_vulnerable_people: bool
    provides_professional_advice: bool
    description: str | None
    website: str | None
    size_class: SizeClass = Field(
        description="Derived from employees and turnover (Companies Act thresholds from April 2025)."
    )
    version: int
    created_at: datetime
    updated_at: datetime


class EnterprisePage(BaseModel):
    items: list[Enterprise]
    next_cursor: str | None = None


# --- cohorts ---------------------------------------------------------------------------------


class CohortCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    programme: str = Field(min_length=1, max_length=200)
    start_date: date
    end_date: date

    @field_validator("end_date")
    @classmethod
    def _ends_after_start(cls, value: date, info: ValidationInfo) -> date:
        start = info.data.get("start_date")
        if start is not None and value < start:
            raise ValueError("must not be before start_date")
        return value


class Cohort(FromRow):
    id: uuid.UUID
    name: str
    programme: str
    start_date: date
    end_date: date
    version: int
    created_at: datetime
    enterprises_count: int = 0


class CohortPage(BaseModel):
    items: list[Cohort]
    next_cursor: str | None = None


# --- milestone definitions -------------------------------------------------------------------


class MilestoneDefinitionCreate(_Strict):
    code: str = Field(description="lower_snake_case, 3 to 64 characters")
    name: str = Field(min_length=1, max_length=200)
    category: Category
    description: str = Field(min_length=1, max_length=5000)
    applies_when: dict[str, Any] = Field(
        default_factory=lambda: {"always": True},
        description='Rule on the enterprise\'s facts, e.g. {"employees_gte": 5}; see readiness.py.',
    )
    threshold_pence: int | None = Field(default=None, ge=0, le=MAX_PENCE)
    validity_days: int | None = Field(default=None, ge=1, le=3650)
    core: bool = Field(default=True, description="Counts in overall readiness (and the tender_ready gate).")

    @field_validator("code")
    @classmethod
    def _code_shape(cls, value: str) -> str:
        if not CODE_PATTERN.match(value):
            raise ValueError("must be lower_snake_case: a letter, then letters, digits or _, 3 to 64 long")
        return value


class MilestoneDefinitionUpdate(_Patch):
    """Only the fields sent change; ``null`` clears the threshold or the validity period."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    category: Category | None = None
    description: str | None = Field(default=None, min_length=1, max_length=5000)
    applies_when: dict[str, Any] | None = None
    threshold_pence: int | None = Field(default=None, ge=0, le=MAX_PENCE)
    validity_days: int | None = Field(default=None, ge=1, le=3650)
    core: bool | None = None

    @field_validator("name", "category", "description", "applies_when", "core")
    @classmethod
    def _required_stay_set(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value


class MilestoneDefinition(FromRow):
    code: str
    name: str
    category: Category
    description: str
    applies_when: dict[str, Any]
    threshold_pence: int | None
    validity_days: int | None
    core: bool
    builtin: bool
    version: int
    created_at: datetime
    updated_at: datetime | None


class MilestoneDefinitionPage(BaseModel):
    items: list[MilestoneDefinition]
    next_cursor: str | None = None


# --- enterprise milestones -------------------------------------------------------------------


class Evidence(_Strict):
    reference: str | None = Field(default=None, max_length=500, description="Policy or certificate number.")
    url: str | None = Field(default=None, max_length=2000, description="Where the document is held.")
    issuer: str | None = Field(default=None, max_length=200)
    issued_on: date | None = None
    notes: str | None = Field(default=None, max_length=5000)

    @model_validator(mode="after")
    def _something_to_check(self) -> Evidence:
        if not (self.reference or self.url):
            raise ValueError("evidence needs a reference or a url")
        return self


class MilestoneUpdate(_Strict):
    status: RequestedStatus
    evidence: Evidence | None = None
    value_pence: int | None = Field(default=None, ge=0, le=MAX_PENCE, description="Evidenced amount.")
    expires_at: AwareDatetime | None = Field(default=None, description="When it lapses.")
    note: str | None = Field(default=None, max_length=5000)


class Party(BaseModel):
    role: str
    actor: str
    subject_id: str | None = None


class StandingVerification(BaseModel):
    """The verification in force while its renewal awaits review."""

    evidence: dict[str, Any] | None = None
    value_pence: int | None = None
    expires_at: datetime | None = None
    submitted_at: datetime | None = None
    submitted_by: Party | None = None
    verified_at: datetime
    verified_by: Party | None = None


class EnterpriseMilestone(BaseModel):
    code: str
    name: str
    category: Category
    status: MilestoneStatus
    applies: bool = Field(description="Counts in this enterprise's overall readiness.")
    threshold_pence: int | None
    evidence: dict[str, Any] | None = None
    value_pence: int | None = None
    expires_at: datetime | None = None
    note: str | None = None
    submitted_at: datetime | None = None
    submitted_by: Party | None = None
    verified_at: datetime | None = None
    verified_by: Party | None = None
    version: int = 0
    updated_at: datetime | None = None
    renewal_pending: bool = Field(
        default=False,
        description="A verified milestone was resubmitted to renew it: the fields above are the "
        "renewal under review, and `standing` the verification still in force.",
    )
    standing: StandingVerification | None = Field(
        default=None,
        description="While a renewal is pending: the verification that still counts for readiness "
        "until its `expires_at` passes.",
    )


class EnterpriseMilestonePage(BaseModel):
    items: list[EnterpriseMilestone]
    next_cursor: str | None = None


# --- readiness and history -------------------------------------------------------------------


class VerifiedOut(FromRow):
    code: str
    expires_at: datetime | None
    value_pence: int | None
    renewal_pending: bool = Field(
        default=False, description="This is a standing verification whose renewal awaits review."
    )


class GapOut(FromRow):
    code: str
    reason: str = Field(
        description="not_started, in_progress, submitted, rejected, expired or below_threshold"
    )
    required_value_pence: int | None = None
    value_pence: int | None = None


class ReadinessOut(BaseModel):
    enterprise_id: uuid.UUID
    demand_id: uuid.UUID | None = None
    score: float = Field(ge=0, le=1)
    ready: bool
    missing: list[str]
    expiring_soon: list[str]
    verified: list[VerifiedOut]
    required: list[str] = Field(description="The codes this readiness is measured against.")
    gaps: list[GapOut]
    assessed_at: datetime


class HistoryEntry(BaseModel):
    id: int
    at: datetime
    actor: Party
    milestone_code: str | None
    action: str
    changes: dict[str, Any] = Field(description='{"field": {"from": old, "to": new}}')
    note: str | None


class HistoryPage(BaseModel):
    items: list[HistoryEntry]
    next_cursor: str | None = None


# --- bids ------------------------------------------------------------------------------------

MAX_PARTNERS = 20
PartnerName = Annotated[str, Field(min_length=1, max_length=200)]
Partners = Annotated[list[PartnerName], Field(max_length=MAX_PARTNERS)]


class BidCreate(_Strict):
    demand_id: uuid.UUID = Field(description="A public demand line (GET /demand/{id}).")
    role: BidRole = "lead"
    partners: Partners = Field(
        default_factory=list, description="Names of the consortium or subcontract partners."
    )
    status: BidStartStatus = "intended"
    note: str | None = Field(default=None, max_length=5000)


class BidUpdate(_Patch):
    """Only the fields sent change; ``null`` clears ``contract_value_pence`` or ``note``."""

    status: BidStatus | None = None
    role: BidRole | None = None
    partners: Partners | None = None
    contract_value_pence: int | None = Field(default=None, ge=0, le=MAX_PENCE)
    note: str | None = Field(default=None, max_length=5000)

    @field_validator("status", "role", "partners")
    @classmethod
    def _required_stay_set(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value


class Bid(FromRow):
    id: uuid.UUID
    enterprise_id: uuid.UUID
    demand_id: uuid.UUID
    anchor_id: uuid.UUID | None = Field(default=None, description="The line's anchor, when known.")
    role: BidRole
    partners: list[str]
    status: BidStatus
    contract_value_pence: int | None = Field(description="What the contract won is worth (won bids).")
    submitted_at: datetime | None
    decided_at: datetime | None = Field(description="When it was won, lost or withdrawn.")
    award_check: AwardCheck | None = Field(
        description="The bid against its line's award: confirmed, awaiting_outcome, disputed, "
        "not_awarded; null while no award is known."
    )
    note: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class BidCreated(Bid):
    ready: bool = Field(description="The enterprise meets every requirement of the line.")
    open_gaps: list[GapOut] = Field(description="The line's requirements it does not meet yet.")


class BidPage(BaseModel):
    items: list[Bid]
    next_cursor: str | None = None


class EnterpriseBidQuery(PageQuery):
    status: BidStatus | None = None


class BidQuery(EnterpriseBidQuery):
    demand_id: uuid.UUID | None = None
    enterprise_id: uuid.UUID | None = None


class BidHistoryEntry(BaseModel):
    id: int
    at: datetime
    actor: Party
    version: int
    status: BidStatus
    role: BidRole
    partners: list[str]
    contract_value_pence: int | None
    award_check: AwardCheck | None
    note: str | None


class BidHistoryPage(BaseModel):
    items: list[BidHistoryEntry]
    next_cursor: str | None = None


# --- the impact report ------------------------------------------------------------------------


class ImpactQuery(BaseModel):
    """The scope of ``GET /reports/impact``: a period and filters, each optional."""

    model_config = ConfigDict(extra="forbid")

    start: date | None = Field(None, description="First day of the period (inclusive).")
    end: date | None = Field(None, description="Last day of the period (inclusive).")
    cohort_id: uuid.UUID | None = None
    area: str | None = Field(
        None, pattern=r"^[A-Za-z]{1,2}$", description="Postcode area of the enterprises, e.g. LS."
    )
    anchor_id: uuid.UUID | None = Field(None, description="Lines of this anchor only.")
    cpv_division: str | None = Field(
        None, pattern=r"^\d{2}$", description="Lines whose main CPV code is in this division, e.g. 45."
    )
    group_by: ReportGrouping | None = Field(None, description="Also break the figures down by this.")
    shareable: bool = Field(
        False,
        description="For anchors and funders: withhold figures that fewer than three enterprises' "
        "bids stand behind.",
    )

    @field_validator("area")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else value

    @model_validator(mode="after")
    def _ordered(self) -> ImpactQuery:
        if self.start and self.end and self.end < self.start:
            raise ValueError("end is before start")
        return self


class ImpactFigures(BaseModel):
    """One scope's figures; null when not applicable to a group or listed in ``withheld``."""

    enterprises: int | None = Field(description="Enterprises in scope.")
    reached_tender_ready: int | None = Field(
        description="Enterprises that first reached tender_ready in the period."
    )
    median_days_to_tender_ready: float | None = Field(
        description="From the cohort's start (or registration) to tender_ready, of those."
    )
    enterprises_bidding: int | None
    bids_submitted: int | None = Field(description="Bids submitted in the period.")
    bids_won: int | None = Field(description="Outcomes in the period: won.")
    bids_lost: int | None
    bids_withdrawn: int | None
    win_rate: float | None = Field(description="won / (won + lost), of outcomes in the period.")
    value_won_pence: int | None = Field(description="Contract value of the bids won in the period.")
    wins_confirmed: int | None = Field(description="Wins the anchor's award names too.")
    wins_disputed: int | None = Field(description="Wins whose line's award names another supplier.")
    awards_unrecorded: int | None = Field(
        description="Awards to an enterprise that has not recorded the win."
    )
    enterprises_winning: int | None
    pipeline_lines: int | None = Field(
        description="Public lines first published in the period, with a value."
    )
    pipeline_value_pence: int | None
    pipeline_value_bid_pence: int | None = Field(
        description="Of that value: lines an enterprise in scope bid for."
    )
    pipeline_value_won_pence: int | None = Field(
        description="Of that value: lines an enterprise in scope won."
    )
    share_bid: float | None
    share_won: float | None
    mentoring_hours_before_wins: float | None = Field(
        description="Hours of milestone mentoring the winners had before their first win in the period."
    )
    withheld: list[str] = Field(default_factory=list, description="Figures withheld in a shareable report.")


class ImpactGroup(BaseModel):
    by: ReportGrouping
    label: str | None = Field(description="The cohort's name or the CPV division's; null for an anchor.")
    key: str | None = Field(
        description="The cohort or anchor id, postcode area or CPV division; null: no cohort."
    )
    figures: ImpactFigures


class WonFrom(BaseModel):
    anchor_id: uuid.UUID | None
    wins: int
    value_won_pence: int


class ImpactReport(BaseModel):
    generated_at: datetime
    query: ImpactQuery
    totals: ImpactFigures
    groups: list[ImpactGroup]
    won_from: list[WonFrom] = Field(description="Wins in the period by the anchor that awarded them.")
    won_from_withheld: int = Field(description="Anchors left out of won_from in a shareable report.")
    notes: list[str]
