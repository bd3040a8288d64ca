"""What every route of the mentoring service needs: the caller, the clock, times in query strings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlalchemy.engine import Row

from services.mentoring import service
from services.mentoring.schemas import normalise_tag, within_horizon
from services.mentoring.settings import MentoringSettings
from shared.db import SessionDep
from shared.http import MAX_PAGE_SIZE
from shared.principal import Principal
from shared.problems import Problem, field_errors, not_found

API = "/api/v1"


# -- dependencies -------------------------------------------------------------------------------
# All async: FastAPI would run a plain ``def`` dependency in its threadpool.


def signed_in_principal(request: Request) -> Principal:
    principal: Principal = request.state.principal  # verified by the kit's PrincipalMiddleware
    # The gateway sends "public" only for a calendar feed; everything else needs a credential.
    if principal.role == "public":
        raise Problem(401, "Unauthorized", "This route needs a credential.", type="unauthorized")
    return principal


async def signed_in(request: Request) -> Principal:
    return signed_in_principal(request)


@dataclass(frozen=True, slots=True)
class Context:
    """Who asks (signed in), the service clock's time and the settings: one dependency for the
    three, as FastAPI resolves every dependency of a route on every request."""

    principal: Principal
    now: datetime
    settings: MentoringSettings


async def context(request: Request) -> Context:
    state = request.app.state
    return Context(signed_in_principal(request), state.clock(), state.mentoring_settings)


Caller = Annotated[Principal, Depends(signed_in)]
ContextDep = Annotated[Context, Depends(context)]
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


def parse_time(value: str | None, field: str, *, allow_date: bool = True) -> datetime | date | None:
    """RFC 3339 with an offset, or (where allowed) a date meaning local midnight."""
    if value is None:
        return None
    text = value.strip()
    if allow_date and len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            pass
        else:
            within_horizon_or_422(datetime(day.year, day.month, day.day, 12, tzinfo=UTC), field)
            return day
    # An unencoded "+" in a query string arrives as a space.
    if len(text) > 6 and text[-6] == " " and text[-3] == ":":
        text = text[:-6] + "+" + text[-5:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        expected = "an RFC 3339 time with an offset (2027-03-29T09:00:00+01:00 or ...Z)"
        raise field_errors(
            [{"field": field, "message": f"must be {expected}" + (" or a date" if allow_date else "")}]
        )
    within_horizon_or_422(parsed, field)
    return parsed


def within_horizon_or_422(value: datetime, field: str) -> datetime:
    try:
        return within_horizon(value)
    except ValueError as exc:
        raise field_errors([{"field": field, "message": str(exc)}]) from exc


def required_time(value: str, field: str) -> datetime | date:
    parsed = parse_time(value, field)
    assert parsed is not None
    return parsed


async def mentor_or_404(db: SessionDep, mentor_id: uuid.UUID, *, lock: bool = False) -> Row[Any]:
    mentor = await service.load_mentor(db, mentor_id, lock=lock)
    if mentor is None:
        raise not_found("Mentor", mentor_id)
    return mentor


def tags_of(values: list[str]) -> list[str]:
    tags = []
    for i, value in enumerate(v for raw in values for v in raw.split(",") if v.strip()):
        try:
            tags.append(normalise_tag(value))
        except ValueError as exc:
            raise field_errors([{"field": f"expertise.{i}", "message": str(exc)}]) from exc
    return tags
