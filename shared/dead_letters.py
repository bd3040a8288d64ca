"""Dead letters for staff: list, inspect and replay, at ``/api/v1/admin/{part}/dead-letters``.

Every process with durable consumers (each service, and the gateway for its webhook
fan-out) serves these routes for its own dead letters; the gateway sends
``/api/v1/admin/<service>/...`` to that service. A replay runs the event through the
same consumer's handler, with its inbox check (:meth:`shared.inbox.EventConsumer.replay`):
replaying an event that was applied meanwhile changes nothing. Staff only (403 for others).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from shared.db import Database
from shared.http import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from shared.inbox import EventConsumer, ReplayFailed, dead_letters_table
from shared.pagination import Keyset
from shared.principal import StaffDep
from shared.problems import Problem

Consumers = Callable[[Request], Mapping[str, EventConsumer]]
Status = Literal["waiting", "replayed", "all"]
# The id column is a signed 64-bit integer: a larger number is a 422 naming it, not a 500.
DeadLetterId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The dead letter's id.")]


class DeadLetterOut(BaseModel):
    id: int
    consumer: str = Field(description="The durable consumer that gave up on the event.")
    event_id: str | None = Field(description="Null when the message was not a readable CloudEvent.")
    subject: str = Field(description="The NATS subject (the event type).")
    error: str = Field(description="The error that sent it here (or that its last replay met).")
    deliveries: int = Field(description="How many times NATS had delivered it.")
    stream_sequence: int | None
    created_at: datetime
    replayed_at: datetime | None = Field(description="When staff replayed it; null while waiting.")


class DeadLetterDetail(DeadLetterOut):
    event: dict[str, Any] | None = Field(description="The message as JSON (the CloudEvent), if it is JSON.")
    body: str | None = Field(description="The message as text, when it is not JSON.")


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None = None


class ReplayOut(BaseModel):
    id: int
    outcome: Literal["applied", "already-applied"] = Field(
        description="applied: the handler ran now; already-applied: the consumer's inbox had the event."
    )
    replayed_at: datetime | None


_SUMMARY_COLUMNS = [
    dead_letters_table.c[name]
    for name in (
        "id",
        "consumer",
        "event_id",
        "subject",
        "error",
        "deliveries",
        "stream_sequence",
        "created_at",
        "replayed_at",
    )
]
NEWEST_FIRST = Keyset(dead_letters_table.c.id, descending=True)


def _not_found(dead_letter_id: int) -> Problem:
    return Problem(404, "Not Found", f"No dead letter {dead_letter_id} here.", type="not-found")


async def _read(database: Database, dead_letter_id: int) -> Any:
    async with database.transaction(write=False) as session:
        return (
            await session.execute(
                sa.select(*_SUMMARY_COLUMNS, dead_letters_table.c.body).where(
                    dead_letters_table.c.id == dead_letter_id
                )
            )
        ).one_or_none()


def dead_letters_router(part: str, consumers: Consumers) -> APIRouter:
    """The routes for the dead letters of ``part`` (a service name, or ``gateway``)."""
    router = APIRouter(prefix=f"/admin/{part}/dead-letters", tags=["operations"])
    forbidden: dict[int | str, dict[str, Any]] = {403: {"description": "The caller is not staff."}}

    @router.get(
        "",
        response_model=DeadLetterPage,
        summary=f"Dead-lettered events of the {part} consumers (staff), newest first",
        responses=forbidden,
    )
    async def list_dead_letters(
        request: Request,
        _: StaffDep,
        consumer: str | None = None,
        status: Status = "waiting",
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> DeadLetterPage:
        table = dead_letters_table
        query = sa.select(*_SUMMARY_COLUMNS)
        if consumer is not None:
            query = query.where(table.c.consumer == consumer)
        if status == "waiting":
            query = query.where(table.c.replayed_at.is_(None))
        elif status == "replayed":
            query = query.where(table.c.replayed_at.is_not(None))
        database: Database = request.app.state.database
        async with database.transaction(write=False) as session:
            page, next_cursor = await NEWEST_FIRST.page(session, query, cursor, limit)
        return DeadLetterPage(
            items=[DeadLetterOut.model_validate(row._asdict()) for row in page], next_cursor=next_cursor
        )

    @router.get(
        "/{dead_letter_id}",
        response_model=DeadLetterDetail,
        summary=f"One dead-lettered event of the {part} consumers, with its message (staff)",
        responses={**forbidden, 404: {"description": "No such dead letter."}},
    )
    async def get_dead_letter(
        request: Request, _: StaffDep, dead_letter_id: DeadLetterId
    ) -> DeadLetterDetail:
        row = await _read(request.app.state.database, dead_letter_id)
        if row is None:
            raise _not_found(dead_letter_id)
        fields = row._asdict()
        body: bytes = fields.pop("body")
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        return DeadLetterDetail(
            **fields,
            event=event if isinstance(event, dict) else None,
            body=None if isinstance(event, dict) else body.decode("utf-8", "replace"),
        )

    @router.post(
        "/{dead_letter_id}/replay",
        response_model=ReplayOut,
        summary=f"Run a dead-lettered event through its {part} consumer again (staff)",
        description=(
            "The event goes through the same handler as a delivery, with the consumer's inbox: "
            "an event applied meanwhile is not applied twice. If the handler fails again the "
            "answer is 409 and the dead letter keeps the new error."
        ),
        responses={
            **forbidden,
            404: {"description": "No such dead letter."},
            409: {"description": "The handler failed again, or its consumer does not run here."},
        },
    )
    async def replay_dead_letter(request: Request, _: StaffDep, dead_letter_id: DeadLetterId) -> ReplayOut:
        database: Database = request.app.state.database
        row = await _read(database, dead_letter_id)
        if row is None:
            raise _not_found(dead_letter_id)
        consumer = consumers(request).get(row.consumer)
        if consumer is None:
            raise Problem(
                409,
                "Conflict",
                f"The consumer {row.consumer!r} no longer runs in the {part} process; "
                "its dead letters can be read but not replayed.",
                type="consumer-not-running",
            )
        try:
            applied = await consumer.replay(dead_letter_id)
        except ReplayFailed as exc:
            raise Problem(
                409,
                "Conflict",
                "The event failed again; the dead letter keeps this error.",
                type="replay-failed",
                error=str(exc),
            ) from exc
        except LookupError:
            raise _not_found(dead_letter_id) from None
        after = await _read(database, dead_letter_id)
        return ReplayOut(
            id=dead_letter_id,
            outcome="applied" if applied else "already-applied",
            replayed_at=after.replayed_at if after is not None else None,
        )

    return router
