"""The aggregated pipeline: fine cells kept incrementally, snapshots, and disclosure-controlled views.

Each demand line in the pipeline (status planned or tendering) counts in one fine
cell: its anchor, whether it is aggregate-only, and its *atom*, the most detailed
key a view can ask for (anchor type, CPV group of its main code, quarters of the
expected tender date and of the contract start, value band, VCSE and SME
suitability, delivery area). ``pipeline_cells`` holds the sums per fine cell and is
changed in the same transaction as the lines; a view is a GROUP BY over those rows.

A snapshot job copies the live sums to the ``released_`` columns, forms the
protection blocks (see :mod:`services.demand.disclosure`) over the released
aggregate-only atoms, and records a snapshot; views read only released figures,
so every view of one snapshot is protected by the same blocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import operator
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import cpv
from services.demand.disclosure import (
    Atom,
    Block,
    BlockPlacement,
    Rules,
    build_blocks,
    suppressed_figures,
)
from services.demand.models import (
    pipeline_block_spans,
    pipeline_blocks,
    pipeline_cells,
    pipeline_rollup,
    pipeline_snapshots,
)
from services.demand.schemas import ANCHOR_TYPES, OPEN_STATUSES
from shared.db import utcnow
from shared.problems import field_errors

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

# Advisory lock on PostgreSQL: writers of pipeline cells share it, the snapshot job takes it
# alone, so a snapshot sees no half-applied transaction and never deadlocks with a writer.
PIPELINE_LOCK = 0x64656D616E64


def _drop(*positions: int) -> Callable[[Atom], Hashable]:
    return operator.itemgetter(*(i for i in range(len(ATOM_DIMS)) if i not in positions))


# From the finest to the root; the dimensions dropped first lose most to suppression.
PROTECTION_LEVELS: tuple[Callable[[Atom], Hashable], ...] = (
    _drop(6),  # SME suitability
    _drop(6, 5),  # VCSE suitability
    _drop(6, 5, 3),  # contract-start quarter
    _drop(6, 5, 3, 7),  # delivery area
    _drop(6, 5, 3, 7, 4),  # value band
    _drop(6, 5, 3, 7, 4, 0),  # anchor type: (CPV group, tender quarter) left
    lambda atom: (str(atom[1])[:2], atom[2]),  # CPV division and tender quarter
    lambda atom: (str(atom[1])[:2],),  # CPV division
    lambda atom: (),  # everything
)


def protection_blocks(contributions: dict[Atom, dict[str, int]], rules: Rules) -> list[Block]:
    """:func:`build_blocks` along :data:`PROTECTION_LEVELS`, on atoms packed into integers.

    Same partition as on the tuples (the packing keeps their order, and each level is a
    bit mask keeping what the tuple level keeps), several times faster on 10^5 atoms.
    """
    if not contributions:
        return []
    # Bit fields from most to least significant, in the atom tuple's order, so that integer
    # order is tuple order: anchor type, division, group digit, tender quarter, start quarter,
    # value band, VCSE, SME, delivery area.
    parts: list[list[Any]] = [[] for _ in range(9)]
    for atom in contributions:
        group = str(atom[1])
        for i, value in enumerate((atom[0], group[:2], group[2:], *atom[2:])):
            parts[i].append(value)
    codes = [{v: n for n, v in enumerate(sorted(set(values)))} for values in parts]
    widths = [max(1, (len(table) - 1).bit_length()) for table in codes]
    shifts = [sum(widths[i + 1 :]) for i in range(9)]
    field = [((1 << w) - 1) << shift for w, shift in zip(widths, shifts, strict=True)]
    decoded: dict[int, Atom] = {}
    packed: dict[int, dict[str, int]] = {}
    for atom, per_anchor in contributions.items():
        group = str(atom[1])
        number = 0
        for i, value in enumerate((atom[0], group[:2], group[2:], *atom[2:])):
            number |= codes[i][value] << shifts[i]
        decoded[number] = atom
        packed[number] = per_anchor
    everything = sum(field)

    def keep_without(*dropped: int) -> Callable[[Atom], Hashable]:
        mask = everything & ~sum(field[i] for i in dropped)
        return lambda n: n & mask  # type: ignore[operator]

    # Field numbers: 0 type, 1 division, 2 group digit, 3 tender q, 4 start q, 5 band, 6 VCSE, 7 SME, 8 area.
    levels = (
        keep_without(7),
        keep_without(7, 6),
        keep_without(7, 6, 4),
        keep_without(7, 6, 4, 8),
        keep_without(7, 6, 4, 8, 5),
        keep_without(7, 6, 4, 8, 5, 0),
        keep_without(7, 6, 4, 8, 5, 0, 2),
        keep_without(7, 6, 4, 8, 5, 0, 2, 3),
        lambda n: 0,
    )
    blocks = build_blocks(packed, rules, levels)  # type: ignore[arg-type]
    return [
        Block(block.block_id, block.publishable, tuple(decoded[n] for n in block.atoms))  # type: ignore[index]
        for block in blocks
    ]


# --- where a line counts -------------------------------------------------------------------------


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
    line is not in the pipeline (a draft, awarded, cancelled or withdrawn line)."""
    if line["status"] not in OPEN_STATUSES:
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


def _atom_columns(atom: Atom) -> dict[str, Any]:
    columns = dict(zip(ATOM_DIMS, atom, strict=True))
    columns["cpv_division"] = str(atom[1])[:2]
    return columns


class CellDeltas:
    """Changes to the fine cells made by one transaction, applied in one bulk upsert."""

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

    async def apply(self, session: AsyncSession) -> int:
        """Upsert the changed cells (in key order, so concurrent writers lock rows alike)."""
        now = utcnow()
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
                    **_atom_columns(cell.atom),
                    "lines": lines,
                    "value_pence": value,
                    "annualised_pence": per_year,
                    "dirty": True,
                    "changed_at": now,
                }
            )
        self._cells.clear()
        if not rows:
            return 0
        await lock_for_writing(session)
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(pipeline_cells)
        c = pipeline_cells.c
        statement = statement.on_conflict_do_update(
            index_elements=[c.cell_key],
            set_={
                "lines": c.lines + statement.excluded.lines,
                "value_pence": c.value_pence + statement.excluded.value_pence,
                "annualised_pence": c.annualised_pence + statement.excluded.annualised_pence,
                "dirty": True,
                "changed_at": statement.excluded.changed_at,
            },
        )
        for start in range(0, len(rows), 1000):
            await session.execute(statement, rows[start : start + 1000])
        return len(rows)


async def lock_for_writing(session: AsyncSession) -> None:
    """Writers of pipeline cells share the pipeline lock (PostgreSQL; SQLite has one writer)."""
    if _is_postgres(session) and not session.info.get("pipeline_locked"):
        await session.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(PIPELINE_LOCK)))
        session.info["pipeline_locked"] = True


def _is_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


# --- snapshots -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingChanges:
    cells: int
    first_change: datetime | None
    last_change: datetime | None


async def pending_changes(session: AsyncSession) -> PendingChanges:
    c = pipeline_cells.c
    row = (
        await session.execute(
            sa.select(sa.func.count(), sa.func.min(c.changed_at), sa.func.max(c.changed_at)).where(
                c.dirty.is_(True)
            )
        )
    ).one()
    return PendingChanges(int(row[0] or 0), row[1], row[2])


async def latest_snapshot(session: AsyncSession) -> sa.Row[Any] | None:
    return (
        await session.execute(
            sa.select(pipeline_snapshots).order_by(pipeline_snapshots.c.version.desc()).limit(1)
        )
    ).first()


async def take_release_lock(session: AsyncSession, *, wait_seconds: float | None) -> bool:
    """Take the pipeline lock alone (PostgreSQL): at once, or waiting up to ``wait_seconds``."""
    if not _is_postgres(session):
        return True  # the SQLite write transaction already excludes every other writer
    if wait_seconds is None:
        return bool(await session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(PIPELINE_LOCK))))
    await session.execute(sa.text(f"SET LOCAL lock_timeout = '{int(wait_seconds * 1000)}ms'"))
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(PIPELINE_LOCK)))
    await session.execute(sa.text("SET LOCAL lock_timeout = 0"))
    return True


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    version: int
    generated_at: datetime
    lines_count: int | None
    totals: dict[str, Any]
    blocks: int


def block_key(block: Block) -> int:
    """A block's id, stable while its first atom stays the same (so a small change rewrites few rows)."""
    digest = hashlib.sha256(atom_key(block.atoms[0]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: fits a signed BIGINT


@dataclass
class ReleasePlan:
    """The protection blocks for the figures about to be released, worked out before the release.

    ``aggregate_only_changes`` are the pending aggregate-only cells it was worked out from; the
    release goes ahead with this plan only if they are still exactly those.
    """

    aggregate_only_changes: dict[str, tuple[int, int]]
    blocks: int
    removed: list[str]
    changed: dict[str, tuple[int, bool, Atom]]
    affected_blocks: set[int]


async def _pending_aggregate_only(session: AsyncSession) -> dict[str, tuple[int, int]]:
    c = pipeline_cells.c
    rows = await session.execute(
        sa.select(c.cell_key, c.lines, c.value_pence).where(c.dirty.is_(True), c.aggregate_only.is_(True))
    )
    return {row.cell_key: (int(row.lines), int(row.value_pence)) for row in rows}


async def plan_release(session: AsyncSession, rules: Rules) -> ReleasePlan:
    """Form the blocks of the figures as they would be released now (reads only)."""
    c = pipeline_cells.c
    contributions: dict[Atom, dict[str, int]] = {}
    pending: dict[str, tuple[int, int]] = {}
    result = await session.execute(
        sa.select(
            *(c[d] for d in ATOM_DIMS),
            c.cell_key,
            c.anchor_id,
            c.dirty,
            c.lines,
            c.value_pence,
            c.released_lines,
            c.released_value_pence,
        ).where(c.aggregate_only.is_(True))
    )
    width = len(ATOM_DIMS)
    for row in result:
        if row.dirty:
            pending[row.cell_key] = (int(row.lines), int(row.value_pence))
            lines, value = row.lines, row.value_pence
        else:
            lines, value = row.released_lines, row.released_value_pence
        if lines <= 0:
            continue
        atom: Atom = tuple(row[:width])
        per_anchor = contributions.setdefault(atom, {})
        per_anchor[row.anchor_id] = per_anchor.get(row.anchor_id, 0) + int(value)
    # CPU work: in a thread, so the service keeps answering meanwhile.
    blocks = await asyncio.to_thread(protection_blocks, contributions, rules)
    wanted: dict[str, tuple[int, bool, Atom]] = {}
    for block in blocks:
        ident = block_key(block)
        for atom in block.atoms:
            wanted[atom_key(atom)] = (ident, block.publishable, atom)
    b = pipeline_blocks.c
    current = {
        row.atom_key: (int(row.block_id), bool(row.publishable))
        for row in await session.execute(sa.select(b.atom_key, b.block_id, b.publishable))
    }
    removed = [key for key in current if key not in wanted]
    changed = {key: v for key, v in wanted.items() if current.get(key) != (v[0], v[1])}
    affected = {current[key][0] for key in removed} | {current[key][0] for key in changed if key in current}
    affected |= {v[0] for v in changed.values()}
    return ReleasePlan(pending, len(blocks), removed, changed, affected)


class StalePlan(Exception):
    """Aggregate-only figures changed between planning a release and making it."""


async def release_snapshot(
    session: AsyncSession, rules: Rules, plan: ReleasePlan | None = None
) -> Snapshot | None:
    """Release the live figures and record a new snapshot, or None when nothing changed.

    Run inside a write transaction holding the release lock. With a ``plan`` worked out
    beforehand (outside the lock), raises :class:`StalePlan` if aggregate-only figures moved
    since; without one, plans here.
    """
    c = pipeline_cells.c
    latest = await latest_snapshot(session)
    if plan is None:
        plan = await plan_release(session, rules)
    elif await _pending_aggregate_only(session) != plan.aggregate_only_changes:
        raise StalePlan
    changed = await session.scalar(
        sa.select(sa.func.count())
        .select_from(pipeline_cells)
        .where(
            c.dirty.is_(True),
            sa.or_(
                c.lines != c.released_lines,
                c.value_pence != c.released_value_pence,
                c.annualised_pence != c.released_annualised_pence,
            ),
        )
    )
    await _roll_up_changes(session)
    # Cells emptied by these changes go (the rollup has counted them out); the rest is released.
    await session.execute(sa.delete(pipeline_cells).where(c.dirty.is_(True), c.lines == 0))
    await session.execute(
        sa.update(pipeline_cells)
        .where(c.dirty.is_(True))
        .values(
            released_lines=c.lines,
            released_value_pence=c.value_pence,
            released_annualised_pence=c.annualised_pence,
            dirty=False,
        )
    )
    if not changed and latest is not None:
        return None
    await _write_blocks(session, plan)
    if _is_postgres(session) and (changed > 10_000 or len(plan.changed) > 10_000):
        # Fresh statistics keep the views' plans sane before autovacuum gets there.
        await session.execute(
            sa.text("ANALYZE pipeline_blocks, pipeline_block_spans, pipeline_rollup, pipeline_cells")
        )

    version = (latest.version if latest is not None else 0) + 1
    generated_at = utcnow()
    snapshot_id = str(uuid.uuid4())
    figures = await view_figures(session, ViewParams(), rules)
    totals = figures.totals
    lines_count = totals["count"]
    await session.execute(
        sa.insert(pipeline_snapshots).values(
            version=version,
            id=snapshot_id,
            generated_at=generated_at,
            lines_count=lines_count,
            totals=totals,
            rules=rules_json(rules),
            blocks=plan.blocks,
        )
    )
    return Snapshot(snapshot_id, version, generated_at, lines_count, totals, plan.blocks)


async def _write_blocks(session: AsyncSession, plan: ReleasePlan) -> None:
    """Apply the plan's changes to the block table and the spans of the blocks they touch."""
    b = pipeline_blocks.c
    for start in range(0, len(plan.removed), 500):
        await session.execute(
            sa.delete(pipeline_blocks).where(b.atom_key.in_(plan.removed[start : start + 500]))
        )
    rows = [
        {"atom_key": key, "block_id": ident, "publishable": publishable, **_atom_columns(atom)}
        for key, (ident, publishable, atom) in plan.changed.items()
    ]
    if rows:
        insert = postgresql.insert if _is_postgres(session) else sqlite.insert
        statement = insert(pipeline_blocks)
        statement = statement.on_conflict_do_update(
            index_elements=[b.atom_key],
            set_={"block_id": statement.excluded.block_id, "publishable": statement.excluded.publishable},
        )
        for start in range(0, len(rows), 2000):
            await session.execute(statement, rows[start : start + 2000])
    spans = pipeline_block_spans.c
    source = sa.select(b.block_id, b.publishable, *(b[name] for name in ROLLUP_KEY)).distinct()
    affected = sorted(plan.affected_blocks)
    if len(affected) > 2000:
        await session.execute(sa.delete(pipeline_block_spans))
        await session.execute(
            sa.insert(pipeline_block_spans).from_select(["block_id", "publishable", *ROLLUP_KEY], source)
        )
        return
    for start in range(0, len(affected), 500):
        chunk = affected[start : start + 500]
        await session.execute(sa.delete(pipeline_block_spans).where(spans.block_id.in_(chunk)))
        await session.execute(
            sa.insert(pipeline_block_spans).from_select(
                ["block_id", "publishable", *ROLLUP_KEY], source.where(b.block_id.in_(chunk))
            )
        )


ROLLUP_KEY = ("anchor_type", "cpv_group", "tender_quarter", "start_quarter", "cpv_division")


async def _roll_up_changes(session: AsyncSession) -> None:
    """Add what this release changes to the rollup (before the released figures move)."""
    c = pipeline_cells.c
    grouping = [c.anchor_id, c.aggregate_only, *(c[name] for name in ROLLUP_KEY)]
    changes = (
        sa.select(
            *grouping,
            sa.func.sum(c.lines - c.released_lines),
            sa.func.sum(c.value_pence - c.released_value_pence),
            sa.func.sum(c.annualised_pence - c.released_annualised_pence),
            sa.func.sum(sa.case((c.suitable_for_vcse.is_(True), c.lines - c.released_lines), else_=0)),
            sa.func.sum(sa.case((c.suitable_for_sme.is_(True), c.lines - c.released_lines), else_=0)),
        )
        .where(c.dirty.is_(True))
        .group_by(*grouping)
    )
    measures = ("lines", "value_pence", "annualised_pence", "vcse_lines", "sme_lines")
    insert = postgresql.insert if _is_postgres(session) else sqlite.insert
    statement = insert(pipeline_rollup).from_select(
        ["anchor_id", "aggregate_only", *ROLLUP_KEY, *measures], changes
    )
    r = pipeline_rollup.c
    statement = statement.on_conflict_do_update(
        index_elements=[
            r.anchor_id,
            r.aggregate_only,
            r.anchor_type,
            r.cpv_group,
            r.tender_quarter,
            r.start_quarter,
        ],
        set_={name: r[name] + statement.excluded[name] for name in measures},
    )
    await session.execute(statement)
    await session.execute(sa.delete(pipeline_rollup).where(r.lines == 0))


def rules_json(rules: Rules) -> dict[str, Any]:
    return {
        "min_anchors": rules.min_anchors,
        "dominance_share": rules.dominance_share,
        "p_percent": rules.p_percent,
    }


# --- views ---------------------------------------------------------------------------------------

QUARTER_PATTERN = re.compile(r"^(\d{4})-Q([1-4])$")


def _quarter_param(name: str, value: str | None, errors: list[dict[str, str]]) -> str | None:
    if value is None or value == "":
        return None
    match = QUARTER_PATTERN.match(value)
    if match:
        return value
    try:
        return quarter_of(date.fromisoformat(value))
    except ValueError:
        errors.append({"field": name, "message": "use a quarter like 2027-Q1 (or a date, for its quarter)"})
        return None


def _split(values: Iterable[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or []:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


@dataclass(frozen=True)
class ViewParams:
    """One view of the pipeline: how it is grouped and which part of it is shown."""

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

    @classmethod
    def parse(
        cls,
        *,
        group_by: Iterable[str] | None = None,
        quarter_of: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        cpv_prefixes: Iterable[str] | None = None,
        anchor_types: Iterable[str] | None = None,
        value_bands: Iterable[str] | None = None,
        delivery_areas: Iterable[str] | None = None,
        suitable_for_vcse: bool | None = None,
        suitable_for_sme: bool | None = None,
    ) -> ViewParams:
        """Validate query parameters; 422 naming each bad one."""
        errors: list[dict[str, str]] = []
        dims = _split(group_by)
        for dim in dims:
            if dim not in VIEW_DIMS:
                errors.append(
                    {"field": "group_by", "message": f"{dim!r} is not one of {', '.join(VIEW_DIMS)}"}
                )
        if len(set(dims)) != len(dims):
            errors.append({"field": "group_by", "message": "a dimension is named twice"})
        basis = quarter_of or "tender"
        if basis not in QUARTER_BASES:
            errors.append({"field": "quarter_of", "message": "use tender or contract_start"})
        start = _quarter_param("from", from_, errors)
        end = _quarter_param("to", to, errors)
        if start and end and start > end:
            errors.append({"field": "from", "message": "must not be after to"})
        prefixes = []
        for code in _split(cpv_prefixes):
            prefix = cpv.significant(code) if len(code) == 8 and code.isdigit() else code
            if not (prefix.isdigit() and 2 <= len(prefix) <= 3) or prefix[:2] not in cpv.DIVISIONS:
                errors.append(
                    {
                        "field": "cpv",
                        "message": f"{code!r}: the pipeline is filtered by CPV division (2 digits) "
                        "or group (3 digits) of a known division",
                    }
                )
            else:
                prefixes.append(prefix)
        types = _split(anchor_types)
        for value in types:
            if value not in ANCHOR_TYPES:
                errors.append({"field": "anchor_type", "message": f"{value!r} is not an anchor type"})
        bands = _split(value_bands)
        for value in bands:
            if value not in VALUE_BAND_NAMES:
                errors.append(
                    {
                        "field": "value_band",
                        "message": f"{value!r} is not one of {', '.join(VALUE_BAND_NAMES)}",
                    }
                )
        areas = [a.upper() if a not in (ANYWHERE, MULTIPLE) else a for a in _split(delivery_areas)]
        for value in areas:
            if value not in (ANYWHERE, MULTIPLE) and not re.match(r"^[A-Z]{1,2}$", value):
                errors.append(
                    {
                        "field": "delivery_area",
                        "message": f"{value!r}: use a postcode area, anywhere or multiple",
                    }
                )
        if errors:
            raise field_errors(errors)
        return cls(
            group_by=tuple(dims),
            quarter_of=basis,
            from_quarter=start,
            to_quarter=end,
            cpv=tuple(sorted(set(prefixes))),
            anchor_type=tuple(sorted(set(types))),
            value_band=tuple(sorted(set(bands))),
            delivery_area=tuple(sorted(set(areas))),
            suitable_for_vcse=suitable_for_vcse,
            suitable_for_sme=suitable_for_sme,
        )

    def filters(self) -> dict[str, Any]:
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

    def cache_key(self) -> str:
        return json.dumps(
            {"group_by": self.group_by, "quarter_of": self.quarter_of, **self.filters()}, sort_keys=True
        )

    def column(self, table: sa.Table, dim: str) -> sa.ColumnElement[Any]:
        if dim == "quarter":
            return table.c.tender_quarter if self.quarter_of == "tender" else table.c.start_quarter
        return table.c[dim]

    def condition(self, table: sa.Table) -> sa.ColumnElement[bool] | None:
        """The filter as a condition on a table with the atom columns; None when unfiltered."""
        t = table.c
        conditions: list[sa.ColumnElement[bool]] = []
        quarter = self.column(table, "quarter")
        if self.from_quarter or self.to_quarter:
            conditions.append(quarter != UNSCHEDULED)
        if self.from_quarter:
            conditions.append(quarter >= self.from_quarter)
        if self.to_quarter:
            conditions.append(quarter <= self.to_quarter)
        if self.cpv:
            conditions.append(
                sa.or_(*((t.cpv_division if len(p) == 2 else t.cpv_group) == p for p in self.cpv))
            )
        for name in ("anchor_type", "value_band", "delivery_area"):
            if getattr(self, name):
                conditions.append(t[name].in_(getattr(self, name)))
        for name in ("suitable_for_vcse", "suitable_for_sme"):
            if getattr(self, name) is not None:
                conditions.append(t[name].is_(getattr(self, name)))
        return sa.and_(*conditions) if conditions else None


def _figures(count: int, value: int, per_year: int, anchors: int, vcse: int, sme: int) -> dict[str, Any]:
    return {
        "count": count,
        "total_value_pence": value,
        "annualised_value_pence": per_year,
        "anchors": anchors,
        "vcse_share": round(vcse / count, 4) if count else None,
        "sme_share": round(sme / count, 4) if count else None,
        "suppressed": False,
    }


SUPPRESSED: dict[str, Any] = {
    "count": None,
    "total_value_pence": None,
    "annualised_value_pence": None,
    "anchors": None,
    "vcse_share": None,
    "sme_share": None,
    "suppressed": True,
}


@dataclass
class Figures:
    cells: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)


ROLLUP_DIMS = frozenset({"cpv_division", "cpv_group", "quarter", "anchor_type"})


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
    """The cells and totals of one view of the released pipeline, disclosure control applied.

    Two GROUP BYs: the figures over the fine cells (or the rollup when the view needs no
    finer dimension; ``fine`` forces the cells), and the placement of the protection blocks
    in the view's cells.
    """
    if reads_rollup(params) and not fine:
        table, spans = pipeline_rollup, pipeline_block_spans
        r = table.c
        lines, value, per_year, vcse, sme = (
            r.lines,
            r.value_pence,
            r.annualised_pence,
            r.vcse_lines,
            r.sme_lines,
        )
    else:
        table, spans = pipeline_cells, pipeline_blocks
        c = table.c
        lines, value, per_year = c.released_lines, c.released_value_pence, c.released_annualised_pence
        vcse = sa.case((c.suitable_for_vcse.is_(True), c.released_lines), else_=0)
        sme = sa.case((c.suitable_for_sme.is_(True), c.released_lines), else_=0)
    group = [params.column(table, d).label(d) for d in params.group_by]
    condition = params.condition(table)
    measures = [
        sa.func.sum(lines),
        sa.func.sum(value),
        sa.func.sum(per_year),
        sa.func.count(sa.distinct(table.c.anchor_id)),
        sa.func.sum(vcse),
        sa.func.sum(sme),
    ]
    where = [lines > 0] + ([condition] if condition is not None else [])
    cell_rows = (await session.execute(sa.select(*group, *measures).where(*where).group_by(*group))).all()
    total_row = (await session.execute(sa.select(*measures).where(*where))).one()

    b = spans.c
    block_group = [params.column(spans, d).label(d) for d in params.group_by]
    block_condition = params.condition(spans)
    inside = (
        sa.case((block_condition, sa.literal(1)), else_=sa.literal(0))
        if block_condition is not None
        else sa.literal(1)
    ).label("inside")
    placements: dict[int, BlockPlacement] = {}
    block_rows = await session.execute(
        sa.select(b.block_id, b.publishable, inside, *block_group).group_by(
            b.block_id, b.publishable, inside, *block_group
        )
    )
    width = len(params.group_by)
    for row in block_rows:
        placement = placements.setdefault(row.block_id, BlockPlacement(publishable=bool(row.publishable)))
        if row.inside:
            placement.inside.add(tuple(row[3 : 3 + width]))
        else:
            placement.outside = True
    suppressed_cells, totals_suppressed = suppressed_figures(placements.values())

    figures = Figures()
    n = len(params.group_by)
    for row in sorted(cell_rows, key=lambda r: tuple(r[:n])):
        key_values = tuple(row[:n])
        key = {dim: _key_value(value) for dim, value in zip(params.group_by, key_values, strict=True)}
        if key_values in suppressed_cells:
            figures.cells.append({"key": key, **SUPPRESSED})
        else:
            figures.cells.append({"key": key, **_figures(*(int(v or 0) for v in row[n:]))})
    if totals_suppressed:
        figures.totals = dict(SUPPRESSED)
    else:
        figures.totals = _figures(*(int(v or 0) for v in total_row))
    return figures


def _key_value(value: Any) -> str | bool:
    return value if isinstance(value, bool) else str(value)


async def begin_consistent_read(session: AsyncSession) -> None:
    """Read the snapshot version, cells and blocks from one database snapshot (before any query)."""
    if _is_postgres(session) and not session.in_transaction():
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


async def pipeline_view(session: AsyncSession, params: ViewParams, rules: Rules) -> dict[str, Any]:
    """The whole answer of ``GET /pipeline`` for the latest snapshot."""
    snapshot = await latest_snapshot(session)
    figures = await view_figures(session, params, rules)
    return {
        "snapshot_id": snapshot.id if snapshot is not None else None,
        "version": snapshot.version if snapshot is not None else 0,
        "generated_at": snapshot.generated_at if snapshot is not None else None,
        "group_by": list(params.group_by),
        "quarter_of": params.quarter_of,
        "filters": params.filters(),
        "disclosure": rules_json(rules),
        "cells": figures.cells,
        "totals": figures.totals,
    }


async def latest_version(session: AsyncSession) -> int:
    return int(await session.scalar(sa.select(sa.func.max(pipeline_snapshots.c.version))) or 0)


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
