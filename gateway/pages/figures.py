"""Presentation rules of the pages: the quarters shown, the filters, line sorts, figures in words.

No business rule lives here: which figures exist, and which are withheld, is the demand
service's answer; this module only puts that answer into a person's terms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlencode

from shared.cpv import DIVISION_NAMES

QUARTERS_SHOWN = 8
WITHHELD = "withheld to protect confidential demand"

ANCHOR_TYPE_NAMES = {
    "local_authority": "Local authority",
    "nhs_trust": "NHS trust",
    "university": "University",
    "college": "College",
    "housing_association": "Housing association",
    "police": "Police",
    "fire": "Fire and rescue",
    "other": "Other anchor",
}
CATEGORY_NAMES = {"goods": "Goods", "services": "Services", "works": "Works"}
STATUS_NAMES = {
    "draft": "Draft",
    "planned": "Planned",
    "tendering": "Out to tender",
    "awarded": "Awarded",
    "cancelled": "Cancelled",
    "withdrawn": "Withdrawn",
}
METHOD_NAMES = {
    "open": "Open procedure: any supplier may bid",
    "selective": "Selective: suppliers are shortlisted first",
    "limited": "Limited: only invited suppliers",
    "direct": "Direct award",
}
# The orders the lines pages offer: a label and a sort key of a line (the API has no sort).
LINE_SORTS = {
    "tender": ("expected tender date", lambda line: line.get("expected_tender_date") or "9999"),
    "value": ("estimated value", lambda line: line.get("estimated_value_pence") or 0),
    "title": ("title", lambda line: str(line.get("title", "")).casefold()),
    "anchor": ("anchor", lambda line: str(line.get("_anchor_name", "")).casefold()),
    "posted": ("date posted", lambda line: line.get("created_at") or ""),
}
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_BAND = re.compile(r"^(\d+(?:\.\d+)?)([km]?)")


def quarter_of(day: date) -> str:
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def quarters_from(day: date, count: int = QUARTERS_SHOWN) -> list[str]:
    """``count`` quarters starting with the one ``day`` is in."""
    year, q = day.year, (day.month - 1) // 3
    out = []
    for n in range(count):
        y, m = divmod(q + n, 4)
        out.append(f"{year + y}-Q{m + 1}")
    return out


def quarter_label(quarter: str) -> str:
    """``2027-Q1`` -> ``Jan-Mar 2027``; anything else as it is."""
    match = _QUARTER.match(quarter)
    if match is None:
        return "No date yet" if quarter == "unscheduled" else quarter
    months = ("Jan-Mar", "Apr-Jun", "Jul-Sep", "Oct-Dec")[int(match.group(2)) - 1]
    return f"{months} {match.group(1)}"


def quarter_bounds(quarter: str) -> tuple[date, date]:
    match = _QUARTER.match(quarter)
    assert match is not None, quarter
    year, q = int(match.group(1)), int(match.group(2))
    start = date(year, 3 * q - 2, 1)
    end = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
    return start, date.fromordinal(end.toordinal() - 1)


def division_name(division: str) -> str:
    return DIVISION_NAMES.get(division, f"Division {division}")


def division_label(division: str) -> str:
    return f"{division} {division_name(division)}"


def anchor_type_name(kind: str) -> str:
    return ANCHOR_TYPE_NAMES.get(kind, kind.replace("_", " ").capitalize())


def area_name(area: str) -> str:
    if area == "anywhere":
        return "Anywhere"
    if area == "multiple":
        return "Several areas"
    return f"{area} postcode area"


def band_name(band: str) -> str:
    """``30k-100k`` -> ``£30k to £100k``; ``5m+`` -> ``£5m and above``."""
    if band.endswith("+"):
        return f"£{band[:-1]} and above"
    low, _, high = band.partition("-")
    return f"£{low} to £{high}" if high else band


def band_order(band: str) -> float:
    """Bands sort by their lower bound (``0-30k`` < ``30k-100k`` < ``5m+``)."""
    match = _BAND.match(band)
    if match is None:
        return float("inf")
    scale = {"": 1, "k": 1e3, "m": 1e6}[match.group(2)]
    return float(match.group(1)) * scale


def pounds(pence: int | None) -> str:
    """Exact to the pound: ``£1,234,568``."""
    if pence is None:
        return "withheld"
    return f"£{(pence + 50) // 100:,}"


def short_pounds(pence: int | None) -> str:
    """Short, for charts: ``£1.2m``, ``£350k``, ``£900``."""
    if pence is None:
        return "withheld"
    value = pence / 100
    if value >= 1e9:
        return f"£{value / 1e9:.1f}bn"
    if value >= 1e6:
        return f"£{value / 1e6:.1f}m"
    if value >= 1e3:
        return f"£{value / 1e3:.0f}k"
    return f"£{value:.0f}"


def percent(share: float | None) -> str:
    return "withheld" if share is None else f"{share * 100:.0f}%"


@dataclass(frozen=True)
class PipelineQuery:
    """The filters of a pipeline view as the page's form sends them (every value optional)."""

    anchor_type: str = ""
    value_band: str = ""
    delivery_area: str = ""
    cpv: str = ""
    vcse: bool = False
    sme: bool = False

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> PipelineQuery:
        def text(name: str) -> str:
            return (params.get(name) or "").strip()

        return cls(
            anchor_type=text("anchor_type"),
            value_band=text("value_band"),
            delivery_area=text("delivery_area"),
            cpv=text("cpv"),
            vcse=text("suitable_for_vcse") in ("true", "on", "1"),
            sme=text("suitable_for_sme") in ("true", "on", "1"),
        )

    def form(self) -> list[tuple[str, str]]:
        """The query string pairs of this view (what the form sends; empty filters left out)."""
        out = [
            (name, value)
            for name, value in (
                ("anchor_type", self.anchor_type),
                ("value_band", self.value_band),
                ("delivery_area", self.delivery_area),
                ("cpv", self.cpv),
            )
            if value
        ]
        if self.vcse:
            out.append(("suitable_for_vcse", "true"))
        if self.sme:
            out.append(("suitable_for_sme", "true"))
        return out

    def query_string(self) -> str:
        pairs = self.form()
        return "?" + urlencode(pairs) if pairs else ""

    def api_params(self, group_by: str, quarters: list[str]) -> list[tuple[str, str]]:
        """The ``GET /api/v1/pipeline`` parameters of this view grouped by ``group_by``."""
        return [("group_by", group_by), ("from", quarters[0]), ("to", quarters[-1]), *self.form()]

    @property
    def filtered(self) -> bool:
        return bool(self.form())

    def described(self) -> list[str]:
        """The filters in words, for headings and the text alternative of the charts."""
        out = []
        if self.anchor_type:
            out.append(f"anchor type: {anchor_type_name(self.anchor_type)}")
        if self.value_band:
            out.append(f"value: {band_name(self.value_band)}")
        if self.delivery_area:
            out.append(f"delivery: {area_name(self.delivery_area)}")
        if self.cpv:
            out.append(f"CPV: {division_label(self.cpv) if len(self.cpv) == 2 else self.cpv}")
        if self.vcse:
            out.append("suitable for VCSEs")
        if self.sme:
            out.append("suitable for SMEs")
        return out


@dataclass
class Cell:
    """One published figure of a view, as the API gave it."""

    key: dict[str, Any]
    count: int | None
    value_pence: int | None
    anchors: int | None
    vcse_share: float | None
    sme_share: float | None
    suppressed: bool
    flags: list[str] = field(default_factory=list)  # other published markers, by name

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Cell:
        known = {
            "key",
            "count",
            "total_value_pence",
            "annualised_value_pence",
            "anchors",
            "vcse_share",
            "sme_share",
            "suppressed",
        }
        flags = sorted(k for k, v in raw.items() if k not in known and v is True)
        return cls(
            key=dict(raw.get("key") or {}),
            count=raw.get("count"),
            value_pence=raw.get("total_value_pence"),
            anchors=raw.get("anchors"),
            vcse_share=raw.get("vcse_share"),
            sme_share=raw.get("sme_share"),
            suppressed=bool(raw.get("suppressed")),
            flags=flags,
        )


def cells_by(view: Mapping[str, Any], *dims: str) -> dict[tuple[str, ...], Cell]:
    """The cells of an API answer by their key values along ``dims``."""
    out = {}
    for raw in view.get("cells", []):
        cell = Cell.of(raw)
        out[tuple(str(cell.key.get(d)) for d in dims)] = cell
    return out


def notes_of(views: Iterable[Mapping[str, Any]]) -> list[str]:
    """Notes the API publishes with its figures (``note``, ``notes``, ``confidential.note``), each once."""
    out: list[str] = []
    for view in views:
        confidential = view.get("confidential")
        for value in (
            view.get("note"),
            view.get("notes"),
            confidential.get("note") if isinstance(confidential, Mapping) else None,
        ):
            for text in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
                if isinstance(text, str) and text not in out:
                    out.append(text)
    return out
