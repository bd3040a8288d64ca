"""Matching demand lines and incubated enterprises.

A line fits an enterprise by five parts, each 0..1, weighted into the score:

- ``cpv`` (0.35): the best overlap of their CPV codes by prefix. The enterprise
  supplies the line's branch (its code names a prefix of the line's code): 1; the
  line names a broader branch that contains the enterprise's: 0.9; otherwise by the
  longest shared prefix: category 0.8, class 0.7, group 0.5, division 0.25. Lots'
  codes count too. No shared division: not a match.
- ``capacity`` (0.2): the enterprise's ``max_contract_value_pence`` against the
  line's value: within it 1; only a lot within it 0.85; unknown capacity 0.6;
  otherwise half the ratio of capacity to the smallest value (a consortium bid).
- ``location`` (0.15): the enterprise's postcode against ``delivery_area``: its
  district listed 1; its area listed 0.9; a district of its area listed 0.6;
  delivery anywhere 0.8; unknown postcode 0.5; elsewhere 0.1.
- ``suitability`` (0.1): a VCSE for a line suitable for VCSEs 1; an SME for a line
  suitable for SMEs 0.9; a line flagged for neither 0.5; otherwise 0.3.
- ``readiness`` (0.2): the share of the line's requirements the enterprise has
  verified (unexpired, and at least ``min_value_pence`` where set). The others are
  the ``gaps``.

Pure rules: the enterprises it scores come from :mod:`services.demand.read_models`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.demand import cpv

WEIGHTS = {"cpv": 0.35, "capacity": 0.2, "location": 0.15, "suitability": 0.1, "readiness": 0.2}
SME_SIZES = frozenset({"micro", "small", "medium"})
POSTCODE = re.compile(r"^([A-Z]{1,2})([0-9][A-Z0-9]?)\s*([0-9][A-Z]{2})?$")


def cpv_fit(enterprise_codes: Iterable[str], line_codes: Iterable[str]) -> float:
    best = 0.0
    line_codes = list(line_codes)
    for supplied in enterprise_codes:
        own = cpv.significant(supplied)
        for wanted in line_codes:
            theirs = cpv.significant(wanted)
            if cpv.base(wanted).startswith(own):
                fit = 1.0
            elif cpv.base(supplied).startswith(theirs):
                fit = 0.9
            else:
                shared = cpv.common_prefix_length(supplied, wanted)
                fit = (
                    0.8
                    if shared >= 5
                    else 0.7
                    if shared == 4
                    else 0.5
                    if shared == 3
                    else 0.25
                    if shared == 2
                    else 0
                )
            best = max(best, fit)
    return best


def capacity_fit(capacity: int | None, value: int, lot_values: Sequence[int]) -> float:
    if capacity is None:
        return 0.6
    if value <= capacity:
        return 1.0
    if any(v <= capacity for v in lot_values):
        return 0.85
    smallest = min([value, *lot_values])
    return 0.5 * capacity / smallest if smallest else 0.0


def postcode_parts(postcode: str | None) -> tuple[str, str] | None:
    """(area, district) of a UK postcode: ``LS6 2QR`` -> (``LS``, ``LS6``)."""
    if not postcode:
        return None
    match = POSTCODE.match(postcode.strip().upper())
    if match is None:
        return None
    return match.group(1), match.group(1) + match.group(2)


def location_fit(postcode: str | None, area: Mapping[str, Any] | None) -> float:
    areas = set((area or {}).get("postcode_areas") or [])
    districts = set((area or {}).get("postcode_districts") or [])
    if not areas and not districts:
        return 0.8
    parts = postcode_parts(postcode)
    if parts is None:
        return 0.5
    own_area, own_district = parts
    if own_district in districts:
        return 1.0
    if own_area in areas:
        return 0.9
    if any(re.match(r"^[A-Z]+", d).group(0) == own_area for d in districts):  # type: ignore[union-attr]
        return 0.6
    return 0.1


def suitability_fit(vcse: bool, size_class: str | None, for_vcse: bool, for_sme: bool) -> float:
    if vcse and for_vcse:
        return 1.0
    if (size_class is None or size_class in SME_SIZES) and for_sme:
        return 0.9
    if not for_vcse and not for_sme:
        return 0.5
    return 0.3


def requirement_gaps(
    requirements: Sequence[Mapping[str, Any]], verified: Sequence[Mapping[str, Any]], now: datetime
) -> list[str]:
    held = {v["code"]: v for v in verified}
    gaps = []
    for requirement in requirements:
        proof = held.get(requirement["code"])
        expires = _time(proof.get("expires_at")) if proof else None
        needed = requirement.get("min_value_pence")
        if (
            proof is None
            or (expires is not None and expires <= now)
            or (needed is not None and (proof.get("value_pence") or 0) < needed)
        ):
            gaps.append(requirement["code"])
    return gaps


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Fit:
    score: float
    gaps: list[str]
    parts: dict[str, float]


def fit(
    enterprise: Mapping[str, Any],
    verified: Sequence[Mapping[str, Any]],
    line: Mapping[str, Any],
    now: datetime,
) -> Fit | None:
    """How well a line suits an enterprise; None when they share no CPV division."""
    lots = line.get("lots") or []
    line_codes = list(line["cpv_codes"]) + [code for lot in lots for code in lot.get("cpv_codes") or []]
    parts = {"cpv": cpv_fit(enterprise.get("cpv_codes") or [], line_codes)}
    if parts["cpv"] <= 0:
        return None
    requirements = line.get("requirements") or []
    gaps = requirement_gaps(requirements, verified, now)
    parts["capacity"] = capacity_fit(
        enterprise.get("max_contract_value_pence"),
        line["estimated_value_pence"],
        [lot["estimated_value_pence"] for lot in lots],
    )
    parts["location"] = location_fit(enterprise.get("postcode"), line.get("delivery_area"))
    parts["suitability"] = suitability_fit(
        bool(enterprise.get("vcse")),
        enterprise.get("size_class"),
        bool(line["suitable_for_vcse"]),
        bool(line["suitable_for_sme"]),
    )
    parts["readiness"] = 1.0 - len(gaps) / len(requirements) if requirements else 1.0
    parts = {name: round(value, 4) for name, value in parts.items()}
    score = round(sum(WEIGHTS[name] * value for name, value in parts.items()), 4)
    return Fit(score=min(score, 1.0), gaps=gaps, parts=parts)
