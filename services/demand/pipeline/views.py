"""One view of the released pipeline, disclosure control applied, and the answers' cache."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.demand.disclosure import Rules
from services.demand.pipeline import storage
from services.demand.pipeline.cells import ViewParams

ROLLUP_DIMS = frozenset({"cpv_division", "cpv_group", "quarter", "anchor_type"})

CONFIDENTIAL_NOTE = (
    "Public demand lines are counted exactly and as soon as they are released. Confidential "
    "(aggregate-only) demand is counted only in figures that hold whole CPV division x tender quarter "
    "blocks (group_by at most cpv_division and quarter of the tender date; filters at most from/to and "
    "CPV divisions), only where at least {k} anchors share a block and none dominates, and as of the "
    "last safe release of that block (released every {cadence}, held back when a change would single "
    "out an anchor). Figures with confidential_included false count public lines only."
)


def _figures(
    count: int, value: int, per_year: int, anchors: int, vcse: int, sme: int, *, confidential: bool
) -> dict[str, Any]:
    return {
        "count": count,
        "total_value_pence": value,
        "annualised_value_pence": per_year,
        "anchors": anchors,
        "vcse_share": round(vcse / count, 4) if count else None,
        "sme_share": round(sme / count, 4) if count else None,
        "suppressed": False,
        "confidential_included": confidential,
    }


@dataclass
class Figures:
    cells: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)


def rules_json(rules: Rules) -> dict[str, Any]:
    return {
        "min_anchors": rules.min_anchors,
        "dominance_share": rules.dominance_share,
        "p_percent": rules.p_percent,
    }


def reads_rollup(params: ViewParams) -> bool:
    """Whether a view needs nothing finer than the rollup's dimensions."""
    return set(params.group_by) <= ROLLUP_DIMS and not (
        params.value_band
        or params.delivery_area
        or params.suitable_for_vcse is not None
        or params.suitable_for_sme is not None
    )


async def view_figures(
    session: AsyncSession, params: ViewParams, rules: Rules, *, fine: bool = False
) -> Figures:
    """The cells and totals of one view of the released pipeline.

    One GROUP BY over the released public figures (the fine cells, or the rollup when the
    view needs no finer dimension; ``fine`` forces the cells), with the released
    confidential blocks added when the view holds whole blocks.
    """
    confidential = params.holds_whole_blocks()
    rollup = reads_rollup(params) and not fine
    cell_rows, total_row = await storage.figure_rows(
        session, params, rollup=rollup, confidential=confidential
    )
    figures = Figures()
    width = len(params.group_by)
    for row in sorted(cell_rows, key=lambda r: tuple(r[:width])):
        key = {dim: _key_value(value) for dim, value in zip(params.group_by, row[:width], strict=True)}
        numbers = (int(v or 0) for v in row[width:])
        figures.cells.append({"key": key, **_figures(*numbers, confidential=confidential)})
    figures.totals = _figures(*(int(v or 0) for v in total_row), confidential=confidential)
    return figures


def _key_value(value: Any) -> str | bool:
    return value if isinstance(value, bool) else str(value)


async def pipeline_view(
    session: AsyncSession, params: ViewParams, rules: Rules, *, cadence: str
) -> dict[str, Any]:
    """The whole answer of ``GET /pipeline`` for the latest snapshot."""
    snapshot = await storage.latest_snapshot(session)
    figures = await view_figures(session, params, rules)
    return {
        "snapshot_id": snapshot.id if snapshot is not None else None,
        "version": snapshot.version if snapshot is not None else 0,
        "generated_at": snapshot.generated_at if snapshot is not None else None,
        "group_by": list(params.group_by),
        "quarter_of": params.quarter_of,
        "filters": params.filters(),
        "disclosure": rules_json(rules),
        "confidential": {
            "included": params.holds_whole_blocks(),
            "note": CONFIDENTIAL_NOTE.format(k=rules.min_anchors, cadence=cadence),
        },
        "cells": figures.cells,
        "totals": figures.totals,
    }


def view_etag(version: int, params: ViewParams, rules: Rules) -> str:
    digest = hashlib.sha256(f"{params.cache_key()}|{json.dumps(rules_json(rules))}".encode()).hexdigest()
    return f'"pipeline-{version}-{digest[:20]}"'


class ViewCache:
    """Answers already computed for a snapshot (per process; a new snapshot makes them unreachable)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, bytes] = OrderedDict()

    def get(self, etag: str) -> bytes | None:
        body = self._entries.get(etag)
        if body is not None:
            self._entries.move_to_end(etag)
        return body

    def put(self, etag: str, body: bytes) -> None:
        if self.size <= 0:
            return
        self._entries[etag] = body
        self._entries.move_to_end(etag)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
