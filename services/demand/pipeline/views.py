"""One view of the released pipeline, disclosure control applied, and the answers' cache."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from services.demand.disclosure import Rules
from services.demand.pipeline import storage, view_queries
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


# A view's figures before presentation: per cell key (the group values) and in total, lines,
# value, annualised value, distinct anchors, VCSE-suitable lines, SME-suitable lines.
Numbers = list[int]


@dataclass
class RawFigures:
    cells: dict[tuple[Any, ...], Numbers]
    totals: Numbers


class LastAnswer(NamedTuple):
    """A view's figures as last answered, and the snapshot they are of."""

    version: int
    snapshot_id: str
    raw: RawFigures


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


async def raw_view(session: AsyncSession, params: ViewParams, *, fine: bool = False) -> RawFigures:
    """One GROUP BY over the released public figures (the fine cells, or the rollup when the
    view needs no finer dimension; ``fine`` forces the cells), with the released confidential
    blocks added when the view holds whole blocks."""
    cell_rows, total_row = await view_queries.figure_rows(
        session, params, rollup=reads_rollup(params) and not fine, confidential=params.holds_whole_blocks()
    )
    width = len(params.group_by)
    return RawFigures(
        {tuple(row[:width]): [int(v or 0) for v in row[width:]] for row in cell_rows},
        [int(v or 0) for v in total_row],
    )


def figures_of(params: ViewParams, raw: RawFigures) -> Figures:
    """The cells (in key order) and totals of a view as published."""
    confidential = params.holds_whole_blocks()
    figures = Figures()
    for key in sorted(raw.cells):
        named = {dim: _key_value(value) for dim, value in zip(params.group_by, key, strict=True)}
        figures.cells.append({"key": named, **_figures(*raw.cells[key], confidential=confidential)})
    figures.totals = _figures(*raw.totals, confidential=confidential)
    return figures


def _key_value(value: Any) -> str | bool:
    return value if isinstance(value, bool) else str(value)


# --- moving a view computed for an earlier snapshot ---------------------------------------------

# Views of the last this many releases can be moved by their changes (kept as long).
CHANGES_KEPT = 64
# Beyond this many changed (view cell, anchor) pairs, computing a view again is cheaper.
PATCH_LIMIT = 2000


def moved(raw: RawFigures, width: int, changes: list[Any], lines_now: list[Any]) -> RawFigures:
    """``raw`` moved by ``changes`` (per view cell and anchor: key values, anchor, then deltas of
    lines, value, annualised value, VCSE and SME lines), given the changed anchors' lines in
    each view cell now (key values, anchor, lines). An anchor counts in a cell (or the totals)
    while it has lines there; before the changes it had its lines now less theirs."""
    cells = {key: list(numbers) for key, numbers in raw.cells.items()}
    totals = list(raw.totals)
    now = {(tuple(row[:width]), row[width]): int(row[width + 1] or 0) for row in lines_now}
    anchor_now: dict[str, int] = {}
    for (_key, anchor), lines in now.items():
        anchor_now[anchor] = anchor_now.get(anchor, 0) + lines
    anchor_delta: dict[str, int] = {}
    for row in changes:
        key, anchor = tuple(row[:width]), row[width]
        deltas = [int(v or 0) for v in row[width + 1 :]]  # lines, value, annualised, VCSE, SME
        anchor_delta[anchor] = anchor_delta.get(anchor, 0) + deltas[0]
        _add(totals, deltas)
        if not width:
            continue
        numbers = cells.setdefault(key, [0] * 6)
        _add(numbers, deltas)
        here = now.get((key, anchor), 0)
        numbers[3] += (here > 0) - (here - deltas[0] > 0)
        if numbers[0] == 0:
            del cells[key]  # no line left in it: a GROUP BY would not list it
    for anchor, delta in anchor_delta.items():
        total = anchor_now.get(anchor, 0)
        totals[3] += (total > 0) - (total - delta > 0)
    return RawFigures(cells if width else {(): totals}, totals)


def _add(numbers: Numbers, deltas: list[int]) -> None:
    """Add the deltas of lines, value, annualised value, VCSE and SME lines (not anchors)."""
    for index, delta in zip((0, 1, 2, 4, 5), deltas, strict=True):
        numbers[index] += delta


async def moved_view(
    session: AsyncSession, params: ViewParams, raw: RawFigures, after: int, upto: int
) -> RawFigures | None:
    """A view computed for snapshot ``after`` as of snapshot ``upto`` (read in this session), or
    None when it cannot be moved: too old, too many changes, a view finer than the rollup, the
    confidential part it holds moved, or a release in between recorded no changes."""
    if not reads_rollup(params) or not 0 <= upto - after < CHANGES_KEPT:
        return None
    confidential = params.holds_whole_blocks()
    if not await view_queries.changes_recorded(session, after, upto, confidential=confidential):
        return None
    return await moved_by_changes(session, params, raw, after, upto)


async def moved_by_changes(
    session: AsyncSession, params: ViewParams, raw: RawFigures, after: int, upto: int
) -> RawFigures | None:
    """``raw`` moved by the changes the releases after ``after`` up to ``upto`` recorded (the
    caller knows they all did, and that no confidential part it holds moved); None when there
    are too many."""
    changes = await view_queries.changes_between(session, params, after, upto, limit=PATCH_LIMIT)
    if changes is None:
        return None
    width = len(params.group_by)
    anchors = {row[width] for row in changes}
    lines_now = []
    if anchors:
        confidential = params.holds_whole_blocks()
        lines_now = await view_queries.anchor_lines(session, params, anchors, confidential=confidential)
    return moved(raw, width, changes, lines_now)


async def pipeline_view(
    session: AsyncSession, params: ViewParams, rules: Rules, *, cadence: str, cache: ViewCache
) -> dict[str, Any]:
    """The whole answer of ``GET /pipeline`` for the latest snapshot: the view last answered for
    an earlier snapshot moved by the releases since, or else computed."""
    snapshot = await storage.latest_snapshot(session)
    version = snapshot.version if snapshot is not None else 0
    raw = None
    last = cache.last_answer(params)
    # A last answer moves only along this database's own history (not one before a restore).
    if last is not None and await storage.snapshot_id(session, last.version) == last.snapshot_id:
        raw = await moved_view(session, params, last.raw, last.version, version)
    if raw is None:
        raw = await raw_view(session, params)
        cache.computed_total += 1
    else:
        cache.moved_total += 1
    if snapshot is not None:
        cache.keep_answer(params, version, snapshot.id, raw)
    figures = figures_of(params, raw)
    return {
        "snapshot_id": snapshot.id if snapshot is not None else None,
        "version": version,
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
    """Answers already computed for a snapshot (per process; a new snapshot makes them
    unreachable), and each view's latest figures, which the next snapshots' changes move."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._answers: OrderedDict[str, LastAnswer] = OrderedDict()
        self.computed_total = 0
        self.moved_total = 0

    def last_answer(self, params: ViewParams) -> LastAnswer | None:
        return self._answers.get(params.cache_key())

    def keep_answer(self, params: ViewParams, version: int, snapshot_id: str, raw: RawFigures) -> None:
        self._keep(self._answers, params.cache_key(), LastAnswer(version, snapshot_id, raw))

    def clear(self) -> None:
        self._entries.clear()
        self._answers.clear()

    def get(self, etag: str) -> bytes | None:
        body = self._entries.get(etag)
        if body is not None:
            self._entries.move_to_end(etag)
        return body

    def put(self, etag: str, body: bytes) -> None:
        self._keep(self._entries, etag, body)

    def _keep(self, entries: OrderedDict[str, Any], key: str, value: Any) -> None:
        """Keep ``value`` as the newest of ``entries``, the oldest going past ``size``."""
        if self.size <= 0:
            return
        entries[key] = value
        entries.move_to_end(key)
        while len(entries) > self.size:
            entries.popitem(last=False)
