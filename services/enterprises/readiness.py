"""Tender readiness: which milestones matter for an enterprise, and how far it has got.

Pure functions, no I/O. A milestone definition says when it applies with a *rule*
on the enterprise's facts, a JSON object with exactly one key:

- ``{"always": true}`` (``false``: only when a demand line asks for it)
- ``{"employees_gte": 5}``, ``{"turnover_pence_gte": 3600000000}``,
  ``{"max_contract_value_pence_gte": 500000000}`` (an unknown figure never applies)
- ``{"handles_personal_data": true}``, ``{"works_with_public": true}``,
  ``{"works_with_vulnerable_people": true}``, ``{"provides_professional_advice": true}``,
  ``{"vcse": true}``
- ``{"legal_form_in": ["cio", "charity"]}``, ``{"size_class_in": ["medium", "large"]}``,
  ``{"cpv_division_in": ["72", "48"]}``
- ``{"any": [rule, ...]}``, ``{"all": [rule, ...]}``, ``{"not": rule}``

Readiness is always "for what": a list of :class:`Requirement` (codes with an
optional minimum evidenced value). Overall readiness takes the core definitions
that apply to the facts; readiness for a demand line takes that line's requirements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from services.enterprises.identifiers import LEGAL_FORMS
from services.enterprises.sizing import SIZE_CLASSES
from services.enterprises.vocabulary import GapReason, MilestoneStatus
from shared import cpv

FLAG_FACTS: Final = (
    "handles_personal_data",
    "works_with_public",
    "works_with_vulnerable_people",
    "provides_professional_advice",
    "vcse",
)
AMOUNT_FACTS: Final = {
    "employees_gte": "employees",
    "turnover_pence_gte": "turnover_pence",
    "max_contract_value_pence_gte": "max_contract_value_pence",
}
LIST_FACTS: Final[dict[str, frozenset[str]]] = {
    "legal_form_in": frozenset(LEGAL_FORMS),
    "size_class_in": frozenset(SIZE_CLASSES),
    "cpv_division_in": cpv.DIVISIONS,
}
MAX_RULE_DEPTH: Final = 6
MAX_AMOUNT: Final = 10**15


@dataclass(frozen=True)
class Facts:
    """What we know about an enterprise that decides which milestones apply to it."""

    legal_form: str = "other"
    employees: int | None = None
    turnover_pence: int | None = None
    max_contract_value_pence: int | None = None
    size_class: str = "micro"
    cpv_codes: tuple[str, ...] = ()
    vcse: bool = False
    handles_personal_data: bool = False
    works_with_public: bool = False
    works_with_vulnerable_people: bool = False
    provides_professional_advice: bool = False


@dataclass(frozen=True)
class Definition:
    """The part of a milestone definition readiness needs."""

    code: str
    applies_when: Mapping[str, Any]
    threshold_pence: int | None = None
    core: bool = True


@dataclass(frozen=True)
class Standing:
    """The verification still in force while a resubmission (an early renewal) awaits review."""

    expires_at: datetime | None = None
    value_pence: int | None = None


@dataclass(frozen=True)
class MilestoneState:
    """One enterprise milestone as readiness sees it.

    ``standing`` is set while a verified milestone was resubmitted to renew it: the status,
    expiry and value are then the pending renewal's, and ``standing`` what was verified.
    """

    code: str
    status: MilestoneStatus
    expires_at: datetime | None = None
    value_pence: int | None = None
    standing: Standing | None = None


@dataclass(frozen=True)
class Requirement:
    """A milestone that must be verified and unexpired, with at least this evidenced value."""

    code: str
    min_value_pence: int | None = None


@dataclass(frozen=True)
class Gap:
    code: str
    reason: GapReason
    required_value_pence: int | None = None
    value_pence: int | None = None


@dataclass(frozen=True)
class VerifiedMilestone:
    code: str
    expires_at: datetime | None
    value_pence: int | None
    renewal_pending: bool = False


@dataclass(frozen=True)
class Readiness:
    score: float
    ready: bool
    missing: tuple[str, ...]
    expiring_soon: tuple[str, ...]
    verified: tuple[VerifiedMilestone, ...]
    required: tuple[str, ...] = ()
    gaps: tuple[Gap, ...] = field(default=())


# --- rules -----------------------------------------------------------------------------------


def rule_errors(rule: object, path: str = "applies_when", depth: int = 0) -> list[dict[str, str]]:
    """Every problem with a rule, as ``[{"field", "message"}]`` (empty when it is valid)."""
    if depth > MAX_RULE_DEPTH:
        return [{"field": path, "message": f"rules nest at most {MAX_RULE_DEPTH} deep"}]
    if not isinstance(rule, dict) or len(rule) != 1:
        return [{"field": path, "message": 'a rule is an object with exactly one key, e.g. {"always": true}'}]
    ((key, value),) = rule.items()
    here = f"{path}.{key}"
    if key == "always" or key in FLAG_FACTS:
        if not isinstance(value, bool):
            return [{"field": here, "message": "must be true or false"}]
        return []
    if key in AMOUNT_FACTS:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
            return [{"field": here, "message": f"must be a whole number from 0 to {MAX_AMOUNT}"}]
        return []
    if key in LIST_FACTS:
        allowed = LIST_FACTS[key]
        if not isinstance(value, list) or not value:
            return [{"field": here, "message": "must be a non-empty list"}]
        bad = [v for v in value if not isinstance(v, str) or v not in allowed]
        if bad:
            return [{"field": here, "message": f"unknown values {bad!r}; allowed: {sorted(allowed)}"}]
        return []
    if key in ("any", "all"):
        if not isinstance(value, list) or not value:
            return [{"field": here, "message": "must be a non-empty list of rules"}]
        errors: list[dict[str, str]] = []
        for i, sub in enumerate(value):
            errors += rule_errors(sub, f"{here}.{i}", depth + 1)
        return errors
    if key == "not":
        return rule_errors(value, here, depth + 1)
    known = sorted(["always", "any", "all", "not", *FLAG_FACTS, *AMOUNT_FACTS, *LIST_FACTS])
    return [{"field": here, "message": f"unknown rule {key!r}; known rules: {', '.join(known)}"}]


def applies(rule: Mapping[str, Any], facts: Facts) -> bool:
    """Whether a (valid) rule holds for these facts."""
    ((key, value),) = rule.items()
    if key == "always":
        return bool(value)
    if key in FLAG_FACTS:
        return bool(getattr(facts, key)) == value
    if key in AMOUNT_FACTS:
        amount = getattr(facts, AMOUNT_FACTS[key])
        return amount is not None and amount >= value
    if key == "legal_form_in":
        return facts.legal_form in value
    if key == "size_class_in":
        return facts.size_class in value
    if key == "cpv_division_in":
        return any(code[:2] in value for code in facts.cpv_codes)
    if key == "any":
        return any(applies(sub, facts) for sub in value)
    if key == "all":
        return all(applies(sub, facts) for sub in value)
    if key == "not":
        return not applies(value, facts)
    raise ValueError(f"unknown rule {key!r}")


def overall_requirements(facts: Facts, definitions: Iterable[Definition]) -> list[Requirement]:
    """The core milestones that apply to an enterprise with these facts, with their thresholds."""
    return [
        Requirement(d.code, d.threshold_pence)
        for d in definitions
        if d.core and applies(d.applies_when, facts)
    ]


# --- assessment ------------------------------------------------------------------------------


def _merge(requirements: Iterable[Requirement]) -> dict[str, int | None]:
    """One threshold per code (the highest asked), in first-seen order."""
    merged: dict[str, int | None] = {}
    for r in requirements:
        if r.code in merged:
            current = merged[r.code]
            if r.min_value_pence is not None and (current is None or r.min_value_pence > current):
                merged[r.code] = r.min_value_pence
        else:
            merged[r.code] = r.min_value_pence
    return merged


def verification_in_force(m: MilestoneState, now: datetime) -> VerifiedMilestone | None:
    """The verification of ``m`` that holds at ``now``, if any.

    A verified milestone whose expiry passed counts as expired. While a renewal is pending,
    the standing verification holds until its own expiry passes.
    """
    if m.status == "verified" and (m.expires_at is None or m.expires_at > now):
        return VerifiedMilestone(m.code, m.expires_at, m.value_pence)
    s = m.standing
    if s is not None and (s.expires_at is None or s.expires_at > now):
        return VerifiedMilestone(m.code, s.expires_at, s.value_pence, renewal_pending=True)
    return None


def assess(
    milestones: Iterable[MilestoneState],
    requirements: Sequence[Requirement],
    *,
    now: datetime,
    warning: timedelta,
) -> Readiness:
    """Score (share of required codes met), readiness, what is missing and what expires soon.

    A requirement is met by a verified milestone that has not expired and, when the
    requirement has a minimum value, evidences at least that value. While a renewal of a
    verified milestone is pending, its standing verification (expiry, value) meets it.
    """
    by_code = {m.code: m for m in milestones}
    in_force = {code: verification_in_force(m, now) for code, m in by_code.items()}
    required = _merge(requirements)
    missing: list[str] = []
    gaps: list[Gap] = []
    for code, threshold in required.items():
        m = by_code.get(code)
        v = in_force.get(code)
        if m is None:
            gaps.append(Gap(code, "not_started", threshold))
        elif v is None:
            reason: GapReason = "expired" if m.status in ("verified", "expired") else m.status  # type: ignore[assignment]
            gaps.append(Gap(code, reason, threshold, m.value_pence))
        elif threshold is not None and (v.value_pence is None or v.value_pence < threshold):
            gaps.append(Gap(code, "below_threshold", threshold, v.value_pence))
        else:
            continue
        missing.append(code)
    verified = sorted((v for v in in_force.values() if v is not None), key=lambda v: v.code)
    expiring = tuple(v.code for v in verified if v.expires_at is not None and v.expires_at <= now + warning)
    total = len(required)
    score = 1.0 if total == 0 else (total - len(missing)) / total
    return Readiness(
        score=score,
        ready=not missing,
        missing=tuple(missing),
        expiring_soon=expiring,
        verified=tuple(verified),
        required=tuple(required),
        gaps=tuple(gaps),
    )
