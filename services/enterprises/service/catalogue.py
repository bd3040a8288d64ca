"""The milestone catalogue: the built-in definitions and those staff add or change."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import events as ev
from services.enterprises import readiness, repository
from services.enterprises.actors import Actor
from services.enterprises.schemas import MilestoneDefinition, MilestoneDefinitionCreate
from services.enterprises.service import Precondition, publish
from services.enterprises.service.history import diff
from shared.db import utcnow
from shared.http import etag
from shared.problems import Problem, conflict, field_errors

READINESS_DEFINITION_FIELDS = ("applies_when", "threshold_pence", "core")
"""The fields of a definition that decide readiness."""


def unknown_definition(code: str) -> Problem:
    return Problem(
        404, "Milestone definition not found", f"No milestone definition {code!r}.", type="not-found"
    )


def readiness_definitions(catalogue: Iterable[Any]) -> list[readiness.Definition]:
    return [readiness.Definition(d.code, d.applies_when, d.threshold_pence, d.core) for d in catalogue]


async def get_definition(session: AsyncSession, code: str) -> MilestoneDefinition:
    row = await repository.definition(session, code)
    if row is None:
        raise unknown_definition(code)
    return MilestoneDefinition.model_validate(row)


async def list_definitions(
    session: AsyncSession, limit: int, cursor: str | None
) -> tuple[list[MilestoneDefinition], str | None]:
    rows, next_cursor = await repository.definition_page(session, limit, cursor)
    return [MilestoneDefinition.model_validate(r) for r in rows], next_cursor


async def create_definition(
    session: AsyncSession, data: MilestoneDefinitionCreate, actor: Actor
) -> MilestoneDefinition:
    errors = readiness.rule_errors(data.applies_when)
    if errors:
        raise field_errors(errors)
    taken = conflict(
        f"A milestone definition with code {data.code!r} exists already.",
        errors=[{"field": "code", "message": "already in the catalogue"}],
    )
    if await repository.definition(session, data.code) is not None:
        raise taken
    position = await repository.last_definition_position(session)
    values = data.model_dump() | {
        "builtin": False,
        "position": position + 1,
        "created_at": utcnow(),
        "created_by": f"{actor.role}:{actor.actor}",
    }
    await repository.insert_definition(session, values, taken)
    if data.core:
        # Readiness of every enterprise may change; the readiness job recomputes them in batches.
        await repository.mark_all_readiness_stale(session)
    return await _announced(session, data.code)


async def _announced(session: AsyncSession, code: str) -> MilestoneDefinition:
    """The definition as stored, after adding its ``milestone_definition.published`` event (other
    services keep copies of the catalogue: demand checks the requirement codes of its lines)."""
    definition = await get_definition(session, code)
    await publish(session, ev.MILESTONE_DEFINITION_PUBLISHED, ev.definition_published(definition), code)
    return definition


async def update_definition(
    session: AsyncSession,
    code: str,
    changes: dict[str, Any],
    actor: Actor,
    precondition: Precondition,
) -> MilestoneDefinition:
    """Change a catalogue entry; when what decides readiness changed, every enterprise's
    readiness is recomputed by the readiness job (and announced where it changed)."""
    row = await repository.definition(session, code, lock=True)
    if row is None:
        raise unknown_definition(code)
    precondition(etag(row.version))
    if "applies_when" in changes:
        errors = readiness.rule_errors(changes["applies_when"])
        if errors:
            raise field_errors(errors)
    changed = diff(dict(row._mapping), changes)
    if not changed:
        return MilestoneDefinition.model_validate(row)
    values = changes | {
        "version": row.version + 1,
        "updated_at": utcnow(),
        "updated_by": f"{actor.role}:{actor.actor}",
    }
    await repository.update_definition(session, code, values)
    if any(name in changed for name in READINESS_DEFINITION_FIELDS):
        await repository.mark_all_readiness_stale(session)
    return await _announced(session, code)
