"""Bulk imports: rows upserted by ``external_ref``, all or nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import access, imports, ocds, read_models, repository
from services.demand.schemas import DemandFields
from services.demand.service.anchors import require_anchor
from services.demand.service.lines import (
    FIELD_NAMES,
    LineWrites,
    change_meta,
    line_values,
    requirement_code_errors,
    staleness_after,
    tender_date_errors,
    validate_fields,
)
from services.demand.settings import DemandSettings
from services.demand.vocabulary import CREATE_STATUSES, TERMINAL_STATUSES, TRANSITIONS
from shared.db import utcnow
from shared.principal import Principal
from shared.problems import conflict


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
        self, session: AsyncSession, principal: Principal, anchor: sa.Row[Any], settings: DemandSettings
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
        # The anchor's newest line before this import wrote any (None: it had none), read once.
        self.newest_before: datetime | None = None
        self.newest_read = False
        self.catalogue: frozenset[str] | None = None  # our copy's codes, read at the first batch

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
        if anchor_id is not None and anchor_id != self.anchor.id:
            self.error(item.row, "anchor_id", "differs from the anchor this import is for")
        buyer = item.buyer
        if buyer is not None and not ocds.buyer_is_anchor(buyer, self.anchor.id, self.anchor.identifiers):
            self.error(
                item.row,
                "buyer",
                f"the buyer {buyer['id']!r} is not the anchor this import is for ({self.anchor.name}); "
                "an anchor imports only its own releases (staff import for another anchor with ?anchor_id=)",
            )
        fields, problems = validate_fields(raw)
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
        """The anchor's lines with these ``external_ref`` values.

        Only lines the anchor had when this import began (its first lookup, before it wrote
        anything) can match: a file names each line once, and a line another request creates
        meanwhile makes this import's insert fail as a conflict. So an anchor that had no lines
        needs no lookup, and the lookup stops at the anchor's newest line then.
        """
        if not self.newest_read:
            self.newest_before = await repository.newest_line_created_at(self.session, self.anchor.id)
            self.newest_read = True
        if self.newest_before is None:
            return {}
        return await repository.lines_by_ref(
            self.session, self.anchor.id, refs, created_by=self.newest_before
        )

    async def flush(self) -> None:
        batch, self.batch = self.batch, []
        if not batch:
            return
        existing = await self.existing_lines([fields.external_ref for _, fields in batch])
        if self.catalogue is None:
            self.catalogue = await read_models.milestone_codes(self.session)
        now = utcnow()
        inserts: list[dict[str, Any]] = []
        updates: list[tuple[str, int, dict[str, Any]]] = []
        writes = LineWrites()
        anchor_type = self.anchor.type
        for row_number, fields in batch:
            values = line_values(fields)
            before = existing.get(fields.external_ref or "")
            row_problems = tender_date_errors(values, before, now.date())
            row_problems += requirement_code_errors(values["requirements"], self.catalogue, before)
            for problem in row_problems:
                self.error(row_number, problem["field"], problem["message"])
            if row_problems:
                continue
            if before is None:
                if fields.status not in CREATE_STATUSES:
                    self.error(
                        row_number,
                        "status",
                        f"a new line is draft, planned or tendering, not {fields.status}",
                    )
                    continue
                line = {"id": str(uuid.uuid4()), "anchor_id": self.anchor.id, "version": 1, **values}
                line |= {"created_at": now, "updated_at": now, **change_meta(self.principal, "imported", [])}
                inserts.append(line)
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
            new_values = {
                **values,
                **change_meta(self.principal, "imported", changed),
                **staleness_after(values, before, now.date()),
                "version": before["version"] + 1,
                "updated_at": now,
            }
            updates.append((before["id"], before["version"], new_values))
            writes.record(before, {**before, **new_values}, anchor_type)
            self.counts.updated += 1
        if self.error_total:
            return  # the import fails: keep checking rows, write nothing
        if inserts:
            try:
                async with self.session.begin_nested():
                    await repository.insert_lines(self.session, inserts)
            except IntegrityError as exc:
                raise conflict(
                    "Another import or edit created lines with some of these external_ref values at the same "
                    "time; nothing was imported. Send the file again."
                ) from exc
        await repository.update_lines(self.session, updates)
        await writes.flush(self.session)


async def import_lines(
    session: AsyncSession,
    principal: Principal,
    anchor_id: str | None,
    rows: AsyncIterator[imports.ImportRow],
    settings: DemandSettings,
) -> ImportCounts:
    """Upsert the rows by ``external_ref``; all or nothing (:class:`ImportRejected` lists every bad row)."""
    anchor = await require_anchor(session, access.writing_anchor(principal, anchor_id))
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
