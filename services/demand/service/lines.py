"""Demand lines: post, change (keeping every version), list, history."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import access, cpv, events, read_models, repository
from services.demand.pipeline import storage
from services.demand.pipeline.cells import CellDeltas
from services.demand.repository import LineFilters
from services.demand.schemas import DemandCreate, DemandFields
from services.demand.service.anchors import precondition_failed, require_anchor
from services.demand.vocabulary import (
    CREATE_STATUSES,
    NOT_YET_TENDERING,
    TERMINAL_STATUSES,
    TRANSITIONS,
)
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


def requirement_code_errors(
    requirements: Sequence[Mapping[str, Any]], catalogue: frozenset[str], before: Mapping[str, Any] | None
) -> list[dict[str, str]]:
    """Requirement codes not in our copy of the milestone catalogue: an enterprise could never
    verify them, so the line would show a gap nobody can close. A code the line already had is not
    refused again. An empty copy means the catalogue has not reached this service yet (the
    enterprises service announces it when it starts): codes are refused with that said, rather than
    taken unchecked."""
    had = {r["code"] for r in (before or {}).get("requirements") or []}
    errors = []
    for i, requirement in enumerate(requirements):
        code = requirement["code"]
        if code in catalogue or code in had:
            continue
        if not catalogue:
            message = (
                f"{code!r} cannot be checked: the milestone catalogue has not reached the demand service "
                "yet (it follows within moments of the enterprises service starting); send the line "
                "again shortly, or without requirements for now"
            )
        else:
            message = (
                f"{code!r} is not in the milestone catalogue; GET /api/v1/milestone-definitions lists "
                "the codes (staff add new ones there)"
            )
        errors.append({"field": f"requirements.{i}.code", "message": message})
    return errors


async def catalogue_errors(
    session: AsyncSession, requirements: Sequence[Mapping[str, Any]], before: Mapping[str, Any] | None
) -> list[dict[str, str]]:
    """:func:`requirement_code_errors` against the catalogue copy (read only when codes are given)."""
    if not requirements:
        return []
    return requirement_code_errors(requirements, await read_models.milestone_codes(session), before)


def overdue(values: Mapping[str, Any], today: date) -> bool:
    """A draft or planned line whose expected tender date is before ``today``."""
    day = values.get("expected_tender_date")
    return values.get("status") in NOT_YET_TENDERING and day is not None and day < today


def staleness_after(values: Mapping[str, Any], before: Mapping[str, Any], today: date) -> dict[str, Any]:
    """The stale columns of a line after an update: kept while it is still overdue (a change of
    its title leaves it stale), cleared by a new date, or by the tender starting."""
    if before.get("stale_since") is not None and overdue(values, today):
        return {"stale_since": before["stale_since"], "stale_left_pipeline": before["stale_left_pipeline"]}
    return {"stale_since": None, "stale_left_pipeline": False}


def tender_date_errors(
    values: dict[str, Any], before: dict[str, Any] | None, today: date
) -> list[dict[str, str]]:
    """A line not yet tendering cannot be given an expected tender date in the past (it would be
    counted in a quarter that is over and matched to a tender that will not come). A past date the
    line already had is left to the stale-lines job."""
    day = values.get("expected_tender_date")
    if day is None or values.get("status") not in NOT_YET_TENDERING or day >= today:
        return []
    if before is not None and before.get("expected_tender_date") == day:
        return []
    return [
        {
            "field": "expected_tender_date",
            "message": f"{day.isoformat()} is in the past (today is {today.isoformat()}); give the date "
            "the tender is now expected, or set the status to tendering if it has started",
        }
    ]


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
        self.versions, self.cpv_rows, self.cpv_cleared, self.events = [], [], [], []


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
    errors += tender_date_errors(
        body.model_dump(include={"expected_tender_date", "status"}), None, utcnow().date()
    )
    errors += await catalogue_errors(session, body.model_dump(include={"requirements"})["requirements"], None)
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
    session: AsyncSession,
    principal: Principal,
    line: dict[str, Any],
    patch: dict[str, Any],
    *,
    transitions: Mapping[str, frozenset[str]] = TRANSITIONS,
    also_changed: Sequence[str] = (),
) -> dict[str, Any]:
    """Apply a merge patch to a line; returns the line (unchanged when the patch changes nothing).

    ``transitions`` are the status changes allowed; ``also_changed`` names what changed beside the
    line's own fields (an award), which makes a new version even when the patch changes nothing."""
    if line["status"] in TERMINAL_STATUSES:
        raise conflict(f"The line is {line['status']}; it can no longer change.")
    current = json_state({k: line[k] for k in FIELD_NAMES})
    fields, errors = validate_fields({**current, **patch})
    if fields is None:
        raise field_errors(errors)
    if fields.status != line["status"] and fields.status not in transitions[line["status"]]:
        allowed = ", ".join(sorted(transitions[line["status"]])) or "none"
        errors.append(
            {
                "field": "status",
                "message": f"cannot go from {line['status']} to {fields.status} (allowed: {allowed})",
            }
        )
    values = line_values(fields)
    today = utcnow().date()
    errors += tender_date_errors(values, line, today)
    errors += await catalogue_errors(session, values["requirements"], line)
    if errors:
        raise field_errors(errors)
    changed = [name for name in FIELD_NAMES if values[name] != line[name]] + list(also_changed)
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
    new_values = {
        **values,
        **meta,
        **staleness_after(values, line, today),
        "version": line["version"] + 1,
        "updated_at": now,
    }
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


async def mark_stale_lines(
    session: AsyncSession, *, today: date, now: datetime, leave_pipeline: bool, batch: int
) -> tuple[int, int]:
    """Mark up to ``batch`` overdue lines stale (see :func:`overdue`), taking them out of the
    pipeline when ``leave_pipeline``, and tell each one's anchor (``demand.item.stale.v1``).
    Returns (lines found, lines marked by this call): another replica may have marked some."""
    found = await repository.overdue_lines(session, today, batch)
    writes = LineWrites()
    stale_events: list[CloudEvent] = []
    for line in found:
        if not await repository.mark_stale(
            session, line["id"], line["version"], now, left_pipeline=leave_pipeline
        ):
            continue
        after = {**line, "stale_since": now, "stale_left_pipeline": leave_pipeline}
        writes.cells.move(line, line["anchor_type"], after, line["anchor_type"])
        stale_events.append(events.stale_event(after))
    await storage.apply_cell_deltas(session, writes.cells)
    if stale_events:
        await outbox.add_many(session, stale_events)
    return len(found), len(stale_events)
