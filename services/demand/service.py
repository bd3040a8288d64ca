"""Use cases of the demand service.

They take a session, change state and add outbox events; they never commit.
"""

from __future__ import annotations

import heapq
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import cpv, events, imports, matching, ocds, pipeline
from services.demand.disclosure import Rules
from services.demand.models import (
    anchors,
    demand_line_cpvs,
    demand_line_versions,
    demand_lines,
)
from services.demand.schemas import (
    CREATE_STATUSES,
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    AnchorCreate,
    AnchorPatch,
    DemandCreate,
    DemandFields,
)
from services.demand.settings import DemandSettings
from shared import outbox
from shared.db import Database, utcnow
from shared.events import CloudEvent
from shared.http import decode_cursor, encode_cursor, matches_etag
from shared.principal import Principal
from shared.problems import Problem, conflict, field_errors, forbidden, not_found, validation_errors

log = logging.getLogger("seedbed.demand")

FIELD_NAMES: tuple[str, ...] = tuple(DemandFields.model_fields)
LINE_COLUMNS = [c for c in demand_lines.c if c.name != "main_cpv"]


def rules_of(settings: DemandSettings) -> Rules:
    return Rules(
        min_anchors=settings.pipeline_min_anchors,
        dominance_share=settings.pipeline_dominance_share,
        p_percent=settings.pipeline_p_percent,
    )


def precondition_failed() -> Problem:
    return Problem(
        412,
        "Precondition Failed",
        "The resource changed since you read it; fetch it again and retry with its new ETag.",
        type="precondition-failed",
    )


# --- anchors -------------------------------------------------------------------------------------


def _anchor_state(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "name": m["name"],
        "type": m["type"],
        "identifiers": dict(m["identifiers"] or {}),
        "annual_third_party_spend_pence": m["annual_third_party_spend_pence"],
        "version": m["version"],
        "created_at": m["created_at"],
        "updated_at": m["updated_at"],
    }


async def get_anchor(session: AsyncSession, anchor_id: str) -> dict[str, Any] | None:
    row = (await session.execute(sa.select(anchors).where(anchors.c.id == anchor_id))).first()
    return _anchor_state(row) if row is not None else None


async def create_anchor(session: AsyncSession, body: AnchorCreate) -> dict[str, Any]:
    now = utcnow()
    anchor = {
        "id": str(uuid.uuid4()),
        "name": body.name,
        "type": body.type,
        "identifiers": body.identifiers,
        "annual_third_party_spend_pence": body.annual_third_party_spend_pence,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    await session.execute(sa.insert(anchors).values(**anchor))
    await outbox.add(session, events.anchor_event(events.ANCHOR_REGISTERED, anchor))
    return anchor


async def update_anchor(session: AsyncSession, anchor: dict[str, Any], body: AnchorPatch) -> dict[str, Any]:
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items()}
    for required in ("name", "type", "identifiers"):
        if required in changes and changes[required] is None:
            raise field_errors([{"field": required, "message": "cannot be cleared"}])
    changed = {k: v for k, v in changes.items() if anchor[k] != v}
    if not changed:
        return anchor
    now = utcnow()
    result = await session.execute(
        sa.update(anchors)
        .where(anchors.c.id == anchor["id"], anchors.c.version == anchor["version"])
        .values(**changed, version=anchor["version"] + 1, updated_at=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise precondition_failed()
    new = {**anchor, **changed, "version": anchor["version"] + 1, "updated_at": now}
    if "type" in changed:
        # Its lines move to the cells of the new anchor type.
        deltas = pipeline.CellDeltas()
        result = await session.execute(
            sa.select(*LINE_COLUMNS).where(
                demand_lines.c.anchor_id == anchor["id"], demand_lines.c.status.in_(OPEN_STATUSES)
            )
        )
        for row in result:
            line = dict(row._mapping)
            deltas.move(line, anchor["type"], line, new["type"])
        await deltas.apply(session)
    await outbox.add(session, events.anchor_event(events.ANCHOR_UPDATED, new))
    return new


async def list_anchors(
    session: AsyncSession, *, cursor: str | None, limit: int, anchor_type: str | None, q: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    after = decode_cursor(cursor, 2)
    query = sa.select(anchors)
    if anchor_type:
        query = query.where(anchors.c.type == anchor_type)
    if q:
        query = query.where(sa.func.lower(anchors.c.name).contains(q.lower(), autoescape=True))
    if after is not None:
        query = query.where(
            sa.or_(anchors.c.name > after[0], sa.and_(anchors.c.name == after[0], anchors.c.id > after[1]))
        )
    rows = (await session.execute(query.order_by(anchors.c.name, anchors.c.id).limit(limit + 1))).all()
    items = [_anchor_state(r) for r in rows[:limit]]
    next_cursor = encode_cursor([items[-1]["name"], items[-1]["id"]]) if len(rows) > limit else None
    return items, next_cursor


# --- access to lines -----------------------------------------------------------------------------


def can_see(principal: Principal, line: dict[str, Any]) -> bool:
    """ACCESS.md: staff all; its anchor all of its own; everyone else public non-draft lines."""
    if principal.is_staff or principal.owns("anchor", line["anchor_id"]):
        return True
    return line["visibility"] == "public" and line["status"] != "draft"


def can_edit(principal: Principal, line: dict[str, Any]) -> bool:
    return principal.is_staff or principal.owns("anchor", line["anchor_id"])


def require_visible(principal: Principal, line: dict[str, Any] | None, line_id: str) -> dict[str, Any]:
    if line is None or not can_see(principal, line):
        raise not_found("Demand line", line_id)
    return line


def require_editor(principal: Principal, line: dict[str, Any] | None, line_id: str) -> dict[str, Any]:
    """404 where the line's existence would leak, 403 for a public line of another anchor."""
    line = require_visible(principal, line, line_id)
    if not can_edit(principal, line):
        raise forbidden("Only the anchor that owns this demand line, or staff, may do this.")
    return line


def _line_query() -> sa.Select[Any]:
    return sa.select(*LINE_COLUMNS, anchors.c.type.label("anchor_type")).join(
        anchors, anchors.c.id == demand_lines.c.anchor_id
    )


async def get_line(session: AsyncSession, line_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
    query = _line_query().where(demand_lines.c.id == line_id)
    if for_update and session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(of=demand_lines)
    row = (await session.execute(query)).first()
    return dict(row._mapping) if row is not None else None


def _line_values(fields: DemandFields) -> dict[str, Any]:
    """The stored columns of a validated line (lots numbered)."""
    values = fields.model_dump(mode="python", exclude={"anchor_id"})  # nested models become dicts
    if any(lot["lot_id"] is None for lot in values["lots"]):
        values["lots"] = [lot.model_dump(mode="python") for lot in fields.numbered_lots()]
    return values


CHANGE_KEYS = ("change", "changed_by", "changed_by_role", "changed_fields")


def _json_state(line: dict[str, Any]) -> dict[str, Any]:
    """A line as JSON values (history rows)."""
    out = {}
    for key, value in line.items():
        if key == "main_cpv" or key in CHANGE_KEYS:
            continue
        out[key] = value.isoformat() if isinstance(value, date | datetime) else value
    return out


def _change(principal: Principal, change: str, changed_fields: list[str]) -> dict[str, Any]:
    """Who made a version, and how (kept on the line, then in its history)."""
    return {
        "change": change,
        "changed_by": principal.actor,
        "changed_by_role": principal.role,
        "changed_fields": changed_fields,
    }


def _history_entry(line: dict[str, Any], anchor_type: str) -> dict[str, Any]:
    return {
        "version": line["version"],
        "change": line["change"],
        "changed_at": line["updated_at"],
        "actor": line["changed_by"],
        "actor_role": line["changed_by_role"],
        "changed_fields": list(line["changed_fields"] or []),
        "data": _json_state({**line, "anchor_type": anchor_type}),
    }


def _line_codes(values: dict[str, Any]) -> list[str]:
    codes = {cpv.base(c) for c in values["cpv_codes"]}
    for lot in values.get("lots") or []:
        codes.update(cpv.base(c) for c in lot.get("cpv_codes") or [])
    return sorted(codes)


def _validate_fields(raw: dict[str, Any]) -> tuple[DemandFields | None, list[dict[str, str]]]:
    try:
        fields = DemandFields.model_validate(raw)
    except ValidationError as exc:
        return None, validation_errors(exc.errors())
    return fields, fields.cross_field_errors()


def _write_anchor_id(principal: Principal, requested: str | None) -> str:
    if principal.is_staff:
        if not requested:
            raise field_errors(
                [{"field": "anchor_id", "message": "staff must name the anchor the demand is for"}]
            )
        return requested
    assert principal.role == "anchor" and principal.subject_id is not None
    if requested and requested != principal.subject_id:
        raise forbidden("An anchor posts demand for itself only.")
    return principal.subject_id


async def _require_anchor(session: AsyncSession, anchor_id: str) -> dict[str, Any]:
    anchor = await get_anchor(session, anchor_id)
    if anchor is None:
        raise field_errors([{"field": "anchor_id", "message": f"no anchor with id {anchor_id}"}])
    return anchor


async def _external_ref_taken(
    session: AsyncSession, anchor_id: str, external_ref: str | None, except_id: str | None = None
) -> str | None:
    if external_ref is None:
        return None
    query = sa.select(demand_lines.c.id).where(
        demand_lines.c.anchor_id == anchor_id, demand_lines.c.external_ref == external_ref
    )
    if except_id is not None:
        query = query.where(demand_lines.c.id != except_id)
    return await session.scalar(query)


def _ref_conflict(external_ref: str, other: str | None) -> Problem:
    return conflict(
        f"external_ref {external_ref!r} is already used by another demand line of this anchor.",
        errors=[{"field": "external_ref", "message": f"already used by demand line {other or '(another)'}"}],
    )


@dataclass
class LineWrites:
    """Rows of one transaction's line changes, written in bulk."""

    versions: list[dict[str, Any]] = field(default_factory=list)
    cpv_rows: list[dict[str, Any]] = field(default_factory=list)
    cpv_cleared: list[str] = field(default_factory=list)
    events: list[CloudEvent] = field(default_factory=list)
    cells: pipeline.CellDeltas = field(default_factory=pipeline.CellDeltas)

    def record(self, before: dict[str, Any] | None, after: dict[str, Any], anchor_type: str) -> None:
        """A line created (``before`` None) or changed; ``after`` carries its change keys."""
        after_full = {**after, "anchor_type": anchor_type}
        if before is not None:
            # Every update keeps the previous version.
            entry = _history_entry(before, anchor_type)
            self.versions.append(
                {
                    "line_id": before["id"],
                    "version": entry["version"],
                    "data": entry["data"],
                    "changed_fields": entry["changed_fields"],
                    "change": entry["change"],
                    "actor": entry["actor"],
                    "actor_role": entry["actor_role"],
                    "changed_at": entry["changed_at"],
                }
            )
        if before is None or _line_codes(before) != _line_codes(after):
            if before is not None:
                self.cpv_cleared.append(after["id"])
            self.cpv_rows.extend({"line_id": after["id"], "cpv_code": code} for code in _line_codes(after))
        self.cells.move(before, anchor_type if before else None, after, anchor_type)
        self.events.extend(
            events.line_events({**before, "anchor_type": anchor_type} if before else None, after_full)
        )

    async def flush(self, session: AsyncSession) -> None:
        for start in range(0, len(self.cpv_cleared), 500):
            await session.execute(
                sa.delete(demand_line_cpvs).where(
                    demand_line_cpvs.c.line_id.in_(self.cpv_cleared[start : start + 500])
                )
            )
        if self.cpv_rows:
            await session.execute(sa.insert(demand_line_cpvs), self.cpv_rows)
        if self.versions:
            await session.execute(sa.insert(demand_line_versions), self.versions)
        await self.cells.apply(session)
        if self.events:
            await outbox.add_many(session, self.events)
            _limit_outbox_handoff(session)
        self.versions, self.cpv_rows, self.cpv_cleared, self.events = [], [], [], []


def _limit_outbox_handoff(session: AsyncSession) -> None:
    """Keep a big import from holding every event body in memory until the commit.

    The kit hands committed events to the relay from ``session.info``; past its own
    limit it sweeps the table anyway, so the bodies need not be kept.
    """
    pending = session.info.get(outbox.PENDING_KEY)
    if pending and len(pending) > outbox.HANDOFF_LIMIT:
        session.info[outbox.PENDING_KEY] = pending[:1]
        session.info[outbox.TAINTED_KEY] = True


async def create_line(session: AsyncSession, principal: Principal, body: DemandCreate) -> dict[str, Any]:
    anchor_id = _write_anchor_id(principal, body.anchor_id)
    anchor = await _require_anchor(session, anchor_id)
    errors = body.cross_field_errors()
    if body.status not in CREATE_STATUSES:
        errors.append(
            {"field": "status", "message": f"a new line is draft, planned or tendering, not {body.status}"}
        )
    if errors:
        raise field_errors(errors)
    if body.external_ref and (other := await _external_ref_taken(session, anchor_id, body.external_ref)):
        raise _ref_conflict(body.external_ref, other)
    now = utcnow()
    line = {
        "id": str(uuid.uuid4()),
        "anchor_id": anchor_id,
        "version": 1,
        **_line_values(body),
        "created_at": now,
        "updated_at": now,
        **_change(principal, "created", []),
    }
    try:
        async with session.begin_nested():
            await session.execute(
                sa.insert(demand_lines).values(main_cpv=cpv.base(line["cpv_codes"][0]), **line)
            )
    except IntegrityError as exc:
        raise _ref_conflict(body.external_ref or "", None) from exc
    writes = LineWrites()
    writes.record(None, line, anchor["type"])
    await writes.flush(session)
    return {**line, "anchor_type": anchor["type"]}


async def update_line(
    session: AsyncSession, principal: Principal, line: dict[str, Any], patch: dict[str, Any]
) -> dict[str, Any]:
    """Apply a merge patch to a line; returns the line (unchanged when the patch changes nothing)."""
    if line["status"] in TERMINAL_STATUSES:
        raise conflict(f"The line is {line['status']}; it can no longer change.")
    current = _json_state({k: line[k] for k in FIELD_NAMES})
    fields, errors = _validate_fields({**current, **patch})
    if fields is None:
        raise field_errors(errors)
    if fields.status != line["status"] and fields.status not in TRANSITIONS[line["status"]]:
        allowed = ", ".join(sorted(TRANSITIONS[line["status"]])) or "none"
        errors.append(
            {
                "field": "status",
                "message": f"cannot go from {line['status']} to {fields.status} (allowed: {allowed})",
            }
        )
    if errors:
        raise field_errors(errors)
    values = _line_values(fields)
    changed = [name for name in FIELD_NAMES if values[name] != line[name]]
    if not changed:
        return line
    if "external_ref" in changed and (
        other := await _external_ref_taken(session, line["anchor_id"], values["external_ref"], line["id"])
    ):
        raise _ref_conflict(values["external_ref"], other)
    now = utcnow()
    meta = _change(principal, "updated", changed)
    result = await session.execute(
        sa.update(demand_lines)
        .where(demand_lines.c.id == line["id"], demand_lines.c.version == line["version"])
        .values(
            **values,
            **meta,
            main_cpv=cpv.base(values["cpv_codes"][0]),
            version=line["version"] + 1,
            updated_at=now,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise precondition_failed()
    anchor_type = line["anchor_type"]
    before = {k: v for k, v in line.items() if k != "anchor_type"}
    after = {**before, **values, **meta, "version": line["version"] + 1, "updated_at": now}
    writes = LineWrites()
    writes.record(before, after, anchor_type)
    await writes.flush(session)
    return {**after, "anchor_type": anchor_type}


def _visibility_clause(principal: Principal) -> sa.ColumnElement[bool] | None:
    if principal.is_staff:
        return None
    shown = sa.and_(demand_lines.c.visibility == "public", demand_lines.c.status != "draft")
    if principal.role == "anchor" and principal.subject_id:
        return sa.or_(shown, demand_lines.c.anchor_id == principal.subject_id)
    return shown


@dataclass(frozen=True)
class LineFilters:
    anchor_id: str | None = None
    statuses: tuple[str, ...] = ()
    visibility: str | None = None
    category: str | None = None
    cpv_prefixes: tuple[str, ...] = ()
    tender_from: date | None = None
    tender_to: date | None = None
    suitable_for_sme: bool | None = None
    suitable_for_vcse: bool | None = None

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        t = demand_lines.c
        out: list[sa.ColumnElement[bool]] = []
        if self.anchor_id:
            out.append(t.anchor_id == self.anchor_id)
        if self.statuses:
            out.append(t.status.in_(self.statuses))
        if self.visibility:
            out.append(t.visibility == self.visibility)
        if self.category:
            out.append(t.category == self.category)
        if self.cpv_prefixes:
            c = demand_line_cpvs.c
            out.append(
                t.id.in_(
                    sa.select(c.line_id).where(
                        sa.or_(
                            *(
                                sa.and_(c.cpv_code >= p, c.cpv_code < cpv.prefix_upper_bound(p))
                                for p in self.cpv_prefixes
                            )
                        )
                    )
                )
            )
        if self.tender_from:
            out.append(t.expected_tender_date >= self.tender_from)
        if self.tender_to:
            out.append(t.expected_tender_date <= self.tender_to)
        if self.suitable_for_sme is not None:
            out.append(t.suitable_for_sme.is_(self.suitable_for_sme))
        if self.suitable_for_vcse is not None:
            out.append(t.suitable_for_vcse.is_(self.suitable_for_vcse))
        return out


async def list_lines(
    session: AsyncSession, principal: Principal, filters: LineFilters, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    after = decode_cursor(cursor, 2)
    query = _line_query()
    visible = _visibility_clause(principal)
    if visible is not None:
        query = query.where(visible)
    for condition in filters.conditions():
        query = query.where(condition)
    t = demand_lines.c
    if after is not None:
        try:
            created = datetime.fromisoformat(str(after[0]))
        except ValueError as exc:
            raise field_errors([{"field": "cursor", "message": "not a cursor issued by this API"}]) from exc
        query = query.where(sa.or_(t.created_at > created, sa.and_(t.created_at == created, t.id > after[1])))
    rows = (await session.execute(query.order_by(t.created_at, t.id).limit(limit + 1))).all()
    items = [dict(r._mapping) for r in rows[:limit]]
    next_cursor = (
        encode_cursor([items[-1]["created_at"].isoformat(), items[-1]["id"]]) if len(rows) > limit else None
    )
    return items, next_cursor


async def line_history(
    session: AsyncSession, line: dict[str, Any], *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Every version of a line, newest first: the line itself, then its kept previous versions."""
    after = decode_cursor(cursor, 1)
    items: list[dict[str, Any]] = []
    if after is None:
        items.append(_history_entry(line, line["anchor_type"]))
        below = line["version"]
    else:
        below = int(after[0])
    need = limit - len(items)
    v = demand_line_versions.c
    rows = (
        await session.execute(
            sa.select(demand_line_versions)
            .where(v.line_id == line["id"], v.version < below)
            .order_by(v.version.desc())
            .limit(need + 1)
        )
    ).all()
    items += [dict(r._mapping) for r in rows[:need]]
    next_cursor = encode_cursor([items[-1]["version"]]) if len(rows) > need else None
    return items, next_cursor


# --- bulk import ---------------------------------------------------------------------------------


@dataclass
class ImportCounts:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0


class ImportRejected(Exception):
    def __init__(self, errors: list[dict[str, Any]], total: int, rows: int) -> None:
        super().__init__(f"{total} errors")
        self.errors = errors
        self.total = total
        self.rows = rows


class _Import:
    """One import: rows validated as they stream in, written in batches inside the request's
    transaction; from the first bad row on nothing more is written and the transaction is
    rolled back at the end, while the remaining rows are still checked and reported."""

    def __init__(
        self, session: AsyncSession, principal: Principal, anchor: dict[str, Any], settings: DemandSettings
    ) -> None:
        self.session = session
        self.principal = principal
        self.anchor = anchor
        self.settings = settings
        self.counts = ImportCounts()
        self.errors: list[dict[str, Any]] = []
        self.error_total = 0
        self.seen: dict[str, int] = {}
        self.batch: list[tuple[int, DemandFields]] = []
        self.is_postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
        # The anchor's newest line before this import wrote any (None: it had none), read once.
        self.newest_before: datetime | None = None
        self.newest_read = False

    def error(self, row: int, field_name: str, message: str) -> None:
        self.error_total += 1
        if len(self.errors) < self.settings.import_max_reported_errors:
            self.errors.append({"row": row, "field": field_name, "message": message})

    async def take(self, item: imports.ImportRow) -> None:
        self.counts.rows += 1
        if self.counts.rows > self.settings.import_max_rows:
            if self.counts.rows == self.settings.import_max_rows + 1:
                self.error(item.row, "row", f"an import holds at most {self.settings.import_max_rows} rows")
            return
        for problem in item.errors:
            self.error(item.row, problem["field"], problem["message"])
        if item.errors:
            return
        raw = dict(item.fields)
        anchor_id = raw.pop("anchor_id", None)
        if anchor_id is not None and anchor_id != self.anchor["id"]:
            self.error(item.row, "anchor_id", "differs from the anchor this import is for")
        fields, problems = _validate_fields(raw)
        for problem in problems:
            self.error(item.row, problem["field"], problem["message"])
        if fields is None or problems:
            return
        ref = fields.external_ref
        if ref is None:
            self.error(
                item.row, "external_ref", "required in an import: it is how a re-import finds the line"
            )
            return
        if ref in self.seen:
            self.error(item.row, "external_ref", f"{ref!r} is also on row {self.seen[ref]}; one row per line")
            return
        self.seen[ref] = item.row
        self.batch.append((item.row, fields))
        if len(self.batch) >= self.settings.import_batch_size:
            await self.flush()

    async def existing_lines(self, refs: list[str | None]) -> dict[str, dict[str, Any]]:
        """The anchor's lines with these ``external_ref`` values (locked on PostgreSQL).

        Only lines the anchor had when this import began (its first lookup, before it wrote
        anything) can match: a file names each line once, and a line another request creates
        meanwhile makes this import's insert fail as a conflict. So an anchor that had no lines
        needs no lookup, and on PostgreSQL the lookup stops at the anchor's newest line then.
        Without that bound the planner, whose statistics cannot see the lines this transaction
        has inserted, takes the anchor for one of a few hundred lines and reads all of them
        (``ix_demand_lines_anchor_id_created_at``) to filter the 500 refs: every batch read
        again every line the import had written so far. SQLite takes the unique index for the
        refs (the bound would turn it to the range on ``created_at``).
        """
        t = demand_lines.c
        if not self.newest_read:
            self.newest_before = await self.session.scalar(
                sa.select(sa.func.max(t.created_at)).where(t.anchor_id == self.anchor["id"])
            )
            self.newest_read = True
        existing: dict[str, dict[str, Any]] = {}
        if self.newest_before is None:
            return existing
        for start in range(0, len(refs), 500):
            query = sa.select(*LINE_COLUMNS).where(
                t.anchor_id == self.anchor["id"], t.external_ref.in_(refs[start : start + 500])
            )
            if self.is_postgres:
                query = query.where(t.created_at <= self.newest_before).with_for_update()
            for row in await self.session.execute(query):
                existing[row.external_ref] = dict(row._mapping)
        return existing

    async def flush(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        t = demand_lines.c
        refs = [fields.external_ref for _, fields in batch]
        existing = await self.existing_lines(refs)
        now = utcnow()
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        writes = LineWrites()
        anchor_type = self.anchor["type"]
        for row_number, fields in batch:
            values = _line_values(fields)
            before = existing.get(fields.external_ref or "")
            if before is None:
                if fields.status not in CREATE_STATUSES:
                    self.error(
                        row_number,
                        "status",
                        f"a new line is draft, planned or tendering, not {fields.status}",
                    )
                    continue
                line = {"id": str(uuid.uuid4()), "anchor_id": self.anchor["id"], "version": 1, **values}
                line |= {"created_at": now, "updated_at": now, **_change(self.principal, "imported", [])}
                inserts.append({**line, "main_cpv": cpv.base(values["cpv_codes"][0])})
                writes.record(None, line, anchor_type)
                self.counts.created += 1
                continue
            changed = [name for name in FIELD_NAMES if values[name] != before[name]]
            if not changed:
                self.counts.unchanged += 1
                continue
            if before["status"] in TERMINAL_STATUSES:
                self.error(row_number, "status", f"the line is {before['status']}; it can no longer change")
                continue
            if fields.status != before["status"] and fields.status not in TRANSITIONS[before["status"]]:
                self.error(row_number, "status", f"cannot go from {before['status']} to {fields.status}")
                continue
            meta = _change(self.principal, "imported", changed)
            after = {**before, **values, **meta, "version": before["version"] + 1, "updated_at": now}
            updates.append(
                {
                    "b_id": before["id"],
                    "b_version": before["version"],
                    **values,
                    **meta,
                    "main_cpv": cpv.base(values["cpv_codes"][0]),
                    "version": after["version"],
                    "updated_at": now,
                }
            )
            writes.record(before, after, anchor_type)
            self.counts.updated += 1
        if self.error_total:
            return  # the import fails: keep checking rows, write nothing
        if inserts:
            try:
                async with self.session.begin_nested():
                    await self.session.execute(sa.insert(demand_lines), inserts)
            except IntegrityError as exc:
                raise conflict(
                    "Another import or edit created lines with some of these external_ref values at the same "
                    "time; nothing was imported. Send the file again."
                ) from exc
        if updates:
            columns = [name for name in updates[0] if not name.startswith("b_")]
            statement = (
                sa.update(demand_lines)
                .where(t.id == sa.bindparam("b_id"), t.version == sa.bindparam("b_version"))
                .values({name: sa.bindparam(name) for name in columns})
            )
            await self.session.connection()  # executemany through Core, not the ORM
            await self.session.execute(statement.execution_options(synchronize_session=False), updates)
        await writes.flush(self.session)


async def import_lines(
    session: AsyncSession,
    principal: Principal,
    anchor_id: str | None,
    rows: AsyncIterator[imports.ImportRow],
    settings: DemandSettings,
) -> ImportCounts:
    """Upsert the rows by ``external_ref``; all or nothing (:class:`ImportRejected` lists every bad row)."""
    anchor = await _require_anchor(session, _write_anchor_id(principal, anchor_id))
    job = _Import(session, principal, anchor, settings)
    try:
        async for item in rows:
            await job.take(item)
    except imports.UnreadableFile as exc:
        job.error(exc.row, "body", exc.message)
    if not job.error_total:
        await job.flush()
    if job.error_total:
        raise ImportRejected(job.errors, job.error_total, job.counts.rows)
    return job.counts


# --- OCDS export ---------------------------------------------------------------------------------


async def ocds_package(
    database: Database, filters: LineFilters, settings: DemandSettings, page: int = 500
) -> AsyncIterator[bytes]:
    """The release package of the public open lines, streamed page by page."""
    head, tail = ocds.package_parts(
        uri=settings.ocds_package_base_uri, publisher=settings.ocds_publisher_name, published=utcnow()
    )
    yield head.encode()
    t = demand_lines.c
    known: dict[str, dict[str, Any]] = {}
    after: tuple[datetime, str] | None = None
    first = True
    while True:
        async with database.transaction(write=False) as session:
            query = _line_query().where(t.visibility == "public", t.status.in_(OPEN_STATUSES))
            for condition in filters.conditions():
                query = query.where(condition)
            if after is not None:
                query = query.where(
                    sa.or_(t.created_at > after[0], sa.and_(t.created_at == after[0], t.id > after[1]))
                )
            rows = [
                dict(r._mapping)
                for r in await session.execute(query.order_by(t.created_at, t.id).limit(page))
            ]
            missing = {r["anchor_id"] for r in rows} - known.keys()
            if missing:
                for row in await session.execute(sa.select(anchors).where(anchors.c.id.in_(missing))):
                    known[row.id] = _anchor_state(row)
        parts = []
        for line in rows:
            release = ocds.release_from_line(line, known[line["anchor_id"]], settings.ocds_ocid_prefix)
            parts.append(("" if first else ",") + json.dumps(release, separators=(",", ":")))
            first = False
        if parts:
            yield "".join(parts).encode()
        if len(rows) < page:
            break
        after = (rows[-1]["created_at"], rows[-1]["id"])
    yield tail.encode()


# --- pipeline ------------------------------------------------------------------------------------


async def refresh_pipeline(
    database: Database, settings: DemandSettings, *, force: bool = False
) -> int | None:
    """Publish a new pipeline snapshot when the pipeline changed and the changes settled.

    Debounced: waits until no change came for ``pipeline_debounce_seconds``, or the
    oldest unpublished change is ``pipeline_max_delay_seconds`` old; ``force`` skips the
    wait. Returns the new snapshot version, or None.
    """
    async with database.transaction(write=False) as session:
        pending = await pipeline.pending_changes(session)
        latest = await pipeline.latest_version(session)
    if latest and not pending.cells:
        return None
    now = utcnow()
    overdue = bool(
        pending.first_change
        and now - pending.first_change >= timedelta(seconds=settings.pipeline_max_delay_seconds)
    )
    quiet = not pending.last_change or now - pending.last_change >= timedelta(
        seconds=settings.pipeline_debounce_seconds
    )
    if not (force or overdue or quiet or not latest):
        return None
    rules = rules_of(settings)
    snapshot = None
    for attempt in range(3):
        plan = None
        if attempt < 2:
            # The blocks are formed outside the lock (the slow part); the release checks that the
            # aggregate-only figures they were formed from did not move meanwhile.
            async with database.transaction(write=False) as session:
                await pipeline.begin_consistent_read(session)
                plan = await pipeline.plan_release(session, rules)
        try:
            async with database.transaction() as session:
                if not await pipeline.take_release_lock(
                    session, wait_seconds=3.0 if (force or overdue) else None
                ):
                    return None
                snapshot = await pipeline.release_snapshot(session, rules, plan)
                if snapshot is None:
                    return None
                await outbox.add(
                    session,
                    events.pipeline_event(
                        snapshot.snapshot_id,
                        snapshot.version,
                        snapshot.generated_at,
                        snapshot.lines_count,
                        snapshot.totals,
                    ),
                )
            break
        except pipeline.StalePlan:
            continue
        except DBAPIError as exc:
            if "lock timeout" in str(exc).lower() or "LockNotAvailable" in type(exc.orig).__name__:
                log.info("pipeline snapshot postponed: writers hold the pipeline")
                return None
            raise
    assert snapshot is not None
    log.info("pipeline snapshot published", extra={"version": snapshot.version, "blocks": snapshot.blocks})
    return snapshot.version


async def pipeline_answer(
    session: AsyncSession,
    params: pipeline.ViewParams,
    settings: DemandSettings,
    cache: pipeline.ViewCache,
    if_none_match: str | None,
) -> tuple[str, bytes | None]:
    """(ETag, body) of a view of the latest snapshot; body None when the client's copy is current."""
    rules = rules_of(settings)
    await pipeline.begin_consistent_read(session)
    version = await pipeline.latest_version(session)
    tag = pipeline.view_etag(version, params, rules)
    if matches_etag(if_none_match, tag):
        return tag, None
    body = cache.get(tag)
    if body is None:
        view = await pipeline.pipeline_view(session, params, rules)
        body = json.dumps(jsonable_encoder(view), separators=(",", ":")).encode()
        cache.put(tag, body)
    return tag, body


# --- matching ------------------------------------------------------------------------------------


async def enterprise_matches(session: AsyncSession, enterprise_id: str, limit: int) -> list[dict[str, Any]]:
    """Public open lines the enterprise could bid for, best first."""
    enterprise = await matching.enterprise(session, enterprise_id)
    if enterprise is None:
        raise Problem(
            404,
            "Enterprise not found",
            f"No enterprise with id {enterprise_id} is known to the demand service (yet).",
            type="not-found",
        )
    verified = (await matching.verified_milestones(session, [enterprise_id])).get(enterprise_id, [])
    codes = enterprise["cpv_codes"] or []
    if not codes:
        return []
    now = matching.now()
    t = demand_lines.c
    c = demand_line_cpvs.c
    best: list[tuple[float, str, dict[str, Any]]] = []
    seen: set[str] = set()
    # Lines sharing a CPV group first; the wider division only when that is not enough.
    for width in (3, 2):
        prefixes = sorted({cpv.base(code)[:width] for code in codes})
        candidates = sa.select(c.line_id).where(
            sa.or_(*(sa.and_(c.cpv_code >= p, c.cpv_code < cpv.prefix_upper_bound(p)) for p in prefixes))
        )
        query = _line_query().where(
            t.visibility == "public", t.status.in_(OPEN_STATUSES), t.id.in_(candidates)
        )
        for row in await session.execute(query):
            line = dict(row._mapping)
            if line["id"] in seen:
                continue
            seen.add(line["id"])
            found = matching.fit(enterprise, verified, line, now)
            if found is None:
                continue
            entry = (found.score, line["id"], {"line": line, "fit": found})
            if len(best) < limit:
                heapq.heappush(best, entry)
            elif entry[:2] > best[0][:2]:
                heapq.heapreplace(best, entry)
        if len(best) >= limit:
            break
    ranked = sorted(best, key=lambda e: (-e[0], e[2]["line"]["expected_tender_date"] or date.max, e[1]))
    return [
        {
            "demand_id": e[2]["line"]["id"],
            "score": e[2]["fit"].score,
            "gaps": e[2]["fit"].gaps,
            "title": e[2]["line"]["title"],
            "anchor_id": e[2]["line"]["anchor_id"],
            "status": e[2]["line"]["status"],
            "expected_tender_date": e[2]["line"]["expected_tender_date"],
            "estimated_value_pence": e[2]["line"]["estimated_value_pence"],
            "parts": e[2]["fit"].parts,
        }
        for e in ranked
    ]


async def line_candidates(session: AsyncSession, line: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Incubated enterprises that could bid for a line, best first."""
    now = matching.now()
    enterprises = await matching.incubated_enterprises(session)
    verified = await matching.verified_milestones(session, [e["enterprise_id"] for e in enterprises])
    scored = []
    for enterprise in enterprises:
        found = matching.fit(enterprise, verified.get(enterprise["enterprise_id"], []), line, now)
        if found is not None:
            scored.append((enterprise, found))
    scored.sort(key=lambda pair: (-pair[1].score, pair[0]["name"], pair[0]["enterprise_id"]))
    return [
        {
            "enterprise_id": e["enterprise_id"],
            "name": e["name"],
            "stage": e["stage"],
            "score": f.score,
            "gaps": f.gaps,
            "parts": f.parts,
        }
        for e, f in scored[:limit]
    ]


async def announce_matches(session: AsyncSession, demand_id: str, version: int, limit: int) -> int:
    """``demand.match.found.v1`` for each incubated enterprise that fits a public, open line, as
    the line stands at ``version`` (an event of an older version announces nothing: the newer
    one's will). Returns how many were announced."""
    line = await get_line(session, demand_id)
    if (
        line is None
        or line["version"] != version
        or line["visibility"] != "public"
        or line["status"] not in OPEN_STATUSES
    ):
        return 0
    candidates = await line_candidates(session, line, limit)
    for candidate in candidates:
        await outbox.add(session, events.match_event(line, candidate))
    return len(candidates)
