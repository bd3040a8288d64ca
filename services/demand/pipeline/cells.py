"""Where a demand line counts in the pipeline, and the arithmetic of fine cells and blocks (no I/O)."""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from services.demand import cpv
from services.demand.vocabulary import OPEN_STATUSES

Atom = tuple[Hashable, ...]

UNSCHEDULED = "unscheduled"
ANYWHERE = "anywhere"
MULTIPLE = "multiple"

# (upper bound in pence, exclusive; band name)
VALUE_BANDS: tuple[tuple[int | None, str], ...] = (
    (3_000_000, "0-30k"),
    (10_000_000, "30k-100k"),
    (25_000_000, "100k-250k"),
    (100_000_000, "250k-1m"),
    (500_000_000, "1m-5m"),
    (None, "5m+"),
)
VALUE_BAND_NAMES = tuple(name for _, name in VALUE_BANDS)

ATOM_DIMS = (
    "anchor_type",
    "cpv_group",
    "tender_quarter",
    "start_quarter",
    "value_band",
    "suitable_for_vcse",
    "suitable_for_sme",
    "delivery_area",
)
VIEW_DIMS = (
    "cpv_division",
    "cpv_group",
    "quarter",
    "anchor_type",
    "value_band",
    "suitable_for_vcse",
    "suitable_for_sme",
    "delivery_area",
)
QUARTER_BASES = ("tender", "contract_start")


# A protection block of the confidential part: (CPV division, tender quarter), fixed for ever.
BlockKey = tuple[str, str]


@dataclass(frozen=True)
class BlockFigures:
    """One anchor's aggregate-only figures in one block."""

    lines: int
    value_pence: int
    annualised_pence: int
    vcse_lines: int
    sme_lines: int


def quarter_of(day: date | None) -> str:
    if day is None:
        return UNSCHEDULED
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def value_band(pence: int) -> str:
    for upper, name in VALUE_BANDS:
        if upper is None or pence < upper:
            return name
    raise AssertionError("unreachable")


def delivery_area_key(area: Mapping[str, Any] | None) -> str:
    """The one postcode area a line is delivered in, ``multiple`` or ``anywhere``."""
    if not area:
        return ANYWHERE
    areas = set(area.get("postcode_areas") or [])
    for district in area.get("postcode_districts") or []:
        match = re.match(r"^[A-Z]+", district)
        if match:
            areas.add(match.group(0))
    if not areas:
        return ANYWHERE
    return areas.pop() if len(areas) == 1 else MULTIPLE


def annualised(value_pence: int, duration_months: int | None) -> int:
    """Value per year of contract; a contract of a year or less counts whole."""
    return value_pence * 12 // max(duration_months or 12, 12)


def _as_date(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


@dataclass(frozen=True)
class FineCell:
    anchor_id: str
    aggregate_only: bool
    atom: Atom

    @property
    def key(self) -> str:
        return f"{self.anchor_id}|{int(self.aggregate_only)}|{atom_key(self.atom)}"


def atom_key(atom: Atom) -> str:
    return "|".join(str(int(v)) if isinstance(v, bool) else str(v) for v in atom)


def line_cell(line: Mapping[str, Any], anchor_type: str) -> tuple[FineCell, int, int] | None:
    """The fine cell a line counts in, with its value and annualised value; None when the
    line is not in the pipeline (a draft, awarded, cancelled or withdrawn line, or a stale one that
    left it)."""
    if line["status"] not in OPEN_STATUSES or line.get("stale_left_pipeline"):
        return None
    value = int(line["estimated_value_pence"])
    atom: Atom = (
        anchor_type,
        cpv.group(line["cpv_codes"][0]),
        quarter_of(_as_date(line.get("expected_tender_date"))),
        quarter_of(_as_date(line.get("contract_start"))),
        value_band(value),
        bool(line["suitable_for_vcse"]),
        bool(line["suitable_for_sme"]),
        delivery_area_key(line.get("delivery_area")),
    )
    cell = FineCell(str(line["anchor_id"]), line["visibility"] == "aggregate_only", atom)
    return cell, value, annualised(value, line.get("duration_months"))


def atom_columns(atom: Atom) -> dict[str, Any]:
    columns = dict(zip(ATOM_DIMS, atom, strict=True))
    columns["cpv_division"] = str(atom[1])[:2]
    return columns


class CellDeltas:
    """Changes to the fine cells made by one transaction, summed per cell before they are written."""

    def __init__(self) -> None:
        self._cells: dict[str, tuple[FineCell, list[int]]] = {}

    def add(self, line: Mapping[str, Any] | None, anchor_type: str | None, sign: int) -> None:
        """Count ``line`` in (+1) or out (-1) of its cell; lines outside the pipeline are ignored."""
        if line is None or anchor_type is None:
            return
        found = line_cell(line, anchor_type)
        if found is None:
            return
        cell, value, per_year = found
        entry = self._cells.setdefault(cell.key, (cell, [0, 0, 0]))[1]
        entry[0] += sign
        entry[1] += sign * value
        entry[2] += sign * per_year

    def move(
        self,
        before: Mapping[str, Any] | None,
        before_type: str | None,
        after: Mapping[str, Any] | None,
        after_type: str | None,
    ) -> None:
        self.add(before, before_type, -1)
        self.add(after, after_type, +1)

    def __bool__(self) -> bool:
        return any(any(sums) for _, sums in self._cells.values())

    def take_rows(self) -> list[dict[str, Any]]:
        """The changed cells as ``pipeline_cells`` rows of deltas, in key order (so concurrent
        writers lock rows alike); the deltas are emptied."""
        rows = []
        for key in sorted(self._cells):
            cell, (lines, value, per_year) = self._cells[key]
            if not (lines or value or per_year):
                continue
            rows.append(
                {
                    "cell_key": key,
                    "anchor_id": cell.anchor_id,
                    "aggregate_only": cell.aggregate_only,
                    "atom_key": atom_key(cell.atom),
                    **atom_columns(cell.atom),
                    "lines": lines,
                    "value_pence": value,
                    "annualised_pence": per_year,
                }
            )
        self._cells.clear()
        return rows


@dataclass(frozen=True)
class ViewParams:
    """One view of the pipeline: how it is grouped and which part of it is shown.

    Built from validated query parameters (:class:`services.demand.schemas.PipelineQuery`);
    periods are whole quarters and CPV filters divisions or groups, so every figure of a
    view is a sum over atoms.
    """

    group_by: tuple[str, ...] = ()
    quarter_of: str = "tender"
    from_quarter: str | None = None
    to_quarter: str | None = None
    cpv: tuple[str, ...] = ()
    anchor_type: tuple[str, ...] = ()
    value_band: tuple[str, ...] = ()
    delivery_area: tuple[str, ...] = ()
    suitable_for_vcse: bool | None = None
    suitable_for_sme: bool | None = None

    def filters(self) -> dict[str, Any]:
        """The filters of the view as the answer states them."""
        out: dict[str, Any] = {}
        if self.from_quarter:
            out["from"] = self.from_quarter
        if self.to_quarter:
            out["to"] = self.to_quarter
        for name in ("cpv", "anchor_type", "value_band", "delivery_area"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        for name in ("suitable_for_vcse", "suitable_for_sme"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def holds_whole_blocks(self) -> bool:
        """Whether every figure of the view is a sum of whole blocks (CPV division x tender
        quarter): grouped and filtered by nothing finer, so the confidential part can be in it."""
        if set(self.group_by) - {"cpv_division", "quarter"}:
            return False
        if self.quarter_of != "tender" and (
            "quarter" in self.group_by or self.from_quarter or self.to_quarter
        ):
            return False
        if any(len(prefix) != 2 for prefix in self.cpv):
            return False
        return not (
            self.anchor_type
            or self.value_band
            or self.delivery_area
            or self.suitable_for_vcse is not None
            or self.suitable_for_sme is not None
        )

    def cache_key(self) -> str:
        return json.dumps(
            {"group_by": self.group_by, "quarter_of": self.quarter_of, **self.filters()}, sort_keys=True
        )
