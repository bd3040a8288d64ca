"""Which mentors fit an enterprise: expertise against its open milestones, then capacity.

Milestone codes come from the enterprises service (a default catalogue plus codes
staff add); this service maps them to the expertise categories mentors declare.
Pure logic: the use case gathers the figures, this ranks them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CATEGORIES = (
    "legal",
    "insurance",
    "policy",
    "accreditation",
    "financial",
    "social_value",
    "bidding",
    "digital",
)

# The default milestone catalogue (docs: DOMAIN.md) and the expertise that helps with each.
MILESTONE_EXPERTISE: dict[str, frozenset[str]] = {
    "legal_entity": frozenset({"legal"}),
    "cdp_registration": frozenset({"bidding", "digital"}),
    "exclusions_declaration": frozenset({"legal", "bidding"}),
    "financial_standing": frozenset({"financial"}),
    "employers_liability_insurance": frozenset({"insurance"}),
    "public_liability_insurance": frozenset({"insurance"}),
    "professional_indemnity_insurance": frozenset({"insurance"}),
    "health_safety_policy": frozenset({"policy"}),
    "equality_diversity_policy": frozenset({"policy"}),
    "safeguarding_policy": frozenset({"policy"}),
    "data_protection": frozenset({"policy", "digital", "legal"}),
    "cyber_essentials": frozenset({"digital", "accreditation"}),
    "modern_slavery_statement": frozenset({"policy", "legal"}),
    "carbon_reduction_plan": frozenset({"policy", "social_value"}),
    "iso_certifications": frozenset({"accreditation"}),
    "social_value_offer": frozenset({"social_value", "bidding"}),
    "case_studies": frozenset({"bidding"}),
}

# For codes staff added to the catalogue: the start of a word of the code names a category.
_WORD_STARTS: tuple[tuple[str, str], ...] = (
    ("insur", "insurance"),
    ("liabil", "insurance"),
    ("indemn", "insurance"),
    ("polic", "policy"),
    ("statement", "policy"),
    ("accredit", "accreditation"),
    ("certif", "accreditation"),
    ("financ", "financial"),
    ("account", "financial"),
    ("social", "social_value"),
    ("carbon", "social_value"),
    ("tender", "bidding"),
    ("bidding", "bidding"),
    ("cyber", "digital"),
    ("digital", "digital"),
    ("legal", "legal"),
    ("registr", "legal"),
)
# ...or a whole word does.
_WORDS = {"iso": "accreditation", "bid": "bidding", "case": "bidding", "data": "digital", "gdpr": "digital"}

# Coverage decides; capacity orders mentors who cover the same.
COVERAGE_WEIGHT = 0.8
CAPACITY_WEIGHT = 0.2


def expertise_for(code: str) -> frozenset[str]:
    """The expertise tags that help with a milestone: its categories, and the code itself."""
    known = MILESTONE_EXPERTISE.get(code)
    if known is None:
        words = code.split("_")
        known = frozenset(
            category
            for word in words
            for category in [_WORDS.get(word)]
            + [category for start, category in _WORD_STARTS if word.startswith(start)]
            if category is not None
        )
    return known | {code}


@dataclass(frozen=True)
class Candidate:
    mentor_id: uuid.UUID
    name: str
    expertise: frozenset[str]
    active_mentees: int
    max_active_mentees: int | None
    sessions_this_week: int
    max_sessions_per_week: int | None
    already_mentoring: bool


@dataclass(frozen=True)
class Ranked:
    candidate: Candidate
    score: float
    coverage: float
    covered: tuple[str, ...]
    sessions_left_this_week: int | None


def _headroom(used: int, limit: int | None) -> float:
    if limit is None:
        return 1.0
    return max(0.0, (limit - used) / limit)


def can_take(candidate: Candidate) -> bool:
    """False when the mentor is full of mentees and this enterprise is not one of them."""
    return (
        candidate.already_mentoring
        or candidate.max_active_mentees is None
        or candidate.active_mentees < candidate.max_active_mentees
    )


def rank(open_milestones: Sequence[str], candidates: Iterable[Candidate], limit: int) -> list[Ranked]:
    """Mentors by coverage of the open milestones, then remaining capacity, then name."""
    needs = {code: expertise_for(code) for code in dict.fromkeys(open_milestones)}
    ranked = []
    for candidate in candidates:
        if not can_take(candidate):
            continue
        covered = tuple(code for code, helps in needs.items() if helps & candidate.expertise)
        coverage = len(covered) / len(needs) if needs else 0.0
        mentee_room = (
            1.0
            if candidate.already_mentoring
            else _headroom(candidate.active_mentees, candidate.max_active_mentees)
        )
        week_room = _headroom(candidate.sessions_this_week, candidate.max_sessions_per_week)
        capacity = (mentee_room + week_room) / 2
        left = (
            None
            if candidate.max_sessions_per_week is None
            else max(0, candidate.max_sessions_per_week - candidate.sessions_this_week)
        )
        ranked.append(
            Ranked(
                candidate=candidate,
                score=round(COVERAGE_WEIGHT * coverage + CAPACITY_WEIGHT * capacity, 4),
                coverage=round(coverage, 4),
                covered=covered,
                sessions_left_this_week=left,
            )
        )
    ranked.sort(
        key=lambda r: (-r.coverage, -r.score, r.candidate.name.casefold(), str(r.candidate.mentor_id))
    )
    return ranked[:limit]
