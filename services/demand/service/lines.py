"""Demand lines: post, change (keeping every version), list, history."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import access, cpv, events, repository
from services.demand.pipeline import storage
from services.demand.pipeline.cells import CellDeltas
from services.demand.repository import LineFilters
from services.demand.schemas import DemandCreate, DemandFields
from services.demand.service.anchors import precondition_failed, require_anchor
from services.demand.vocabulary import CREATE_STATUSES, TERMINAL_STATUSES, TRANSITIONS
from shared import outbox
from shared.db import utcnow
from shared.events import CloudEvent
from shared.principal import Principal
from shared.problems import Problem, conflict, field_errors, validation_errors

FIELD_NAMES: tuple[str, ...] = tuple(DemandFields.model_fields)
CHANGE_KEYS = ("change", "changed_by", "changed_by_role", "changed_fields")


def line_values(fields: DemandFields) -> dict[str, Any]:
    """The stored columns of a validated line (lots numbered)."""
    values = fields.model_dump(mode="python", exclude={"anchor_id"})  # nested models become dicts
    if any(lot["lot_id"] is None for lot in values["lots"]):
        values["lots"] = [lot.model_dump(mode="python") for lot in fields.numbered_lots()]
    return values


def json_state(line: dict[str, Any]) -> dict[str, Any]:
    """A line as JSON values (history rows)."""
    out = {}
    for key, value in line.items():
        if key == "main_cpv" or key in CHANGE_KEYS:
            continue
        out[key] = value.isoformat() if isinstance(value, date | datetime) else value
    return out


def change_meta(principal: Principal, change: str, changed_fields: list[str]) -> dict[str, Any]:
    """Who made a version, and how (kept on the line, then in its history)."""
    return {
        "change": change,
        "changed_by": principal.actor,
        "changed_by_role": principal.role,
        "changed_fields": changed_fields,
    }


def history_entry(line: dict[str, Any], anchor_type: str) -> dict[str, Any]:
    """A version of a line as ``demand_line_versions`` keeps it (and the history lists it)."""
    return {
        "line_id": line["id"],
        "version": line["version"],
        "change": line["change"],
        "changed_at": line["updated_at"],
        "actor": line["changed_by"],
        "actor_role": line["changed_by_role"],
        "changed_fields": list(line["changed_fields"] or []),
        "data": json_state({**line, "anchor_type": anchor_type}),
    }


def _line_codes(values: dict[str, Any]) -> list[str]:
    codes = {cpv.base(c) for c in values["cpv_codes"]}
    for lot in values.get("lots") or []:
        codes.update(cpv.base(c) for c in lot.get("cpv_codes") or [])
    return sorted(codes)


def validate_fields(raw: dict[str, Any]) -> tuple[DemandFields | None, list[dict[str, str]]]:
    try:
        fields = DemandFields.model_validate(raw)
    except ValidationError as exc:
        return None, validation_errors(exc.errors())
    return fields, fields.cross_field_errors()


def _ref_conflict(external_ref: str, other: str | None) -> Problem:
    return conflict(
        f"external_ref {external_ref!r} is already used by another demand line of this anchor.",
        errors=[{"field": "external_ref", "message": f"already used by demand line {other or '(another)'}"}],
    )


@dataclass
class LineWrites:
    """What follows from one transaction's line changes (history, CPV rows, pipeline cells,
    events), written in bulk."""

    versions: list[dict[str, Any]] = field(default_factory=list)
    cpv_rows: list[dict[str, Any]] = field(default_factory=list)
    cpv_cleared: list[str] = field(default_factory=list)
    events: list[CloudEvent] = field(default_factory=list)
    cells: CellDeltas = field(default_factory=CellDeltas)

    def record(self, before: dict[str, Any] | None, after: dict[str, Any], anchor_type: str) -> None:
        """A line created (``before`` None) or changed; ``after`` carries its change keys."""
        after_full = {**after, "anchor_type": anchor_type}
        if before is not None:
            # Every update keeps the previous version.
            self.versions.append(history_entry(before, anchor_type))
        if before is None or _line_codes(before) != _line_codes(after):
            if before is not None:
                self.cpv_cleared.append(after["id"])
            self.cpv_rows.extend({"line_id": after["id"], "cpv_code": code} for code in _line_codes(after))
        self.cells.move(before, anchor_type if before else None, after, anchor_type)
        self.events.extend(
            events.line_events({**before, "anchor_type": anchor_type} if before else None, after_full)
        )

    async def flush(self, session: AsyncSession) -> None:
        await repository.replace_line_cpvs(session, self.cpv_cleared, self.cpv_rows)
        await repository.insert_versions(session, self.versions)
        await storage.apply_cell_deltas(session, self.cells)
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


async def get_visible_line(session: AsyncSession, principal: Principal, line_id: str) -> dict[str, Any]:
    return access.require_visible(principal, await repository.get_line(session, line_id), line_id)


async def get_editable_line(
    session: AsyncSession, principal: Principal, line_id: str, *, for_update: bool = False
) -> dict[str, Any]:
    line = await repository.get_line(session, line_id, for_update=for_update)
    return access.require_editor(principal, line, line_id)


async def create_line(session: AsyncSession, principal: Principal, body: DemandCreate) -> dict[str, Any]:
    anchor_id = access.writing_anchor(principal, body.anchor_id)
    anchor = await require_anchor(session, anchor_id)
    errors = body.cross_field_errors()
    if body.status not in CREATE_STATUSES:
        errors.append(
            {"field": "status", "message": f"a new line is draft, planned or tendering, not {body.status}"}
        )
    if errors:
        raise field_errors(errors)
    if body.external_ref and (
        other := await repository.external_ref_owner(session, anchor_id, body.external_ref)
    ):
        raise _ref_conflict(body.external_ref, other)
    now = utcnow()
    line = {
        "id": str(uuid.uuid4()),
        "anchor_id": anchor_id,
        "version": 1,
        **line_values(body),
        "created_at": now,
        "updated_at": now,
        **change_meta(principal, "created", []),
    }
    try:
        async with session.begin_nested():
            await repository.insert_lines(session, [line])
    except IntegrityError as exc:
        raise _ref_conflict(body.external_ref or "", None) from exc
    writes = LineWrites()
    writes.record(None, line, anchor.type)
    await writes.flush(session)
    return {**line, "anchor_type": anchor.type}


async def update_line(
    session: AsyncSession, principal: Principal, line: dict[str, Any], patch: dict[str, Any]
) -> dict[str, Any]:
    """Apply a merge patch to a line; returns the line (unchanged when the patch changes nothing)."""
    if line["status"] in TERMINAL_STATUSES:
        raise conflict(f"The line is {line['status']}; it can no longer change.")
    current = json_state({k: line[k] for k in FIELD_NAMES})
    fields, errors = validate_fields({**current, **patch})
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
    values = line_values(fields)
    changed = [name for name in FIELD_NAMES if values[name] != line[name]]
    if not changed:
        return line
    if "external_ref" in changed and (
        other := await repository.external_ref_owner(
            session, line["anchor_id"], values["external_ref"], line["id"]
        )
    ):
        raise _ref_conflict(values["external_ref"], other)
    now = utcnow()
    meta = change_meta(principal, "updated", changed)
    new_values = {**values, **meta, "version": line["version"] + 1, "updated_at": now}
    if not await repository.update_line(session, line["id"], line["version"], new_values):
        raise precondition_failed()
    anchor_type = line["anchor_type"]
    before = {k: v for k, v in line.items() if k != "anchor_type"}
    after = {**before, **new_values}
    writes = LineWrites()
    writes.record(before, after, anchor_type)
    await writes.flush(session)
    return {**after, "anchor_type": anchor_type}


async def list_lines(
    session: AsyncSession, principal: Principal, filters: LineFilters, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    conditions = filters.conditions()
    visible = access.visible_lines(principal)
    if visible is not None:
        conditions.insert(0, visible)
    after = repository.LINE_ORDER.decode(cursor)
    rows = await repository.line_page(session, conditions, after=after, limit=limit + 1)
    return repository.LINE_ORDER.cut(rows, limit)


async def line_history(
    session: AsyncSession, line: dict[str, Any], *, cursor: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """Every version of a line, newest first: the line itself, then its kept previous versions."""
    after = repository.VERSION_ORDER.decode(cursor)
    items: list[Any] = []
    if after is None:
        items.append(history_entry(line, line["anchor_type"]))
        below = line["version"]
    else:
        (below,) = after
    need = limit - len(items)
    rows = await repository.version_page(session, line["id"], below=below, limit=need + 1)
    items += rows[:need]
    more = len(rows) > need
    return items, repository.VERSION_ORDER.cursor_after(items[-1]) if more else None
