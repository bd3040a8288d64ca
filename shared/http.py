"""HTTP conventions shared by every API: pages, ETag preconditions, JSON bodies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel, ConfigDict

from shared.problems import Problem

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class Page(BaseModel, Generic[T]):
    """One page of a list: ``items`` and the cursor of the next page (null at the end)."""

    items: list[T]
    next_cursor: str | None = None


class FromRow(BaseModel):
    """A response model read from a row (or a record) by attribute. A column named otherwise than
    its field is the field's ``validation_alias`` (the field's own name is read too: FastAPI
    validates an answer again). Every field is in every answer, so the schema lists all as
    required, those with a default too."""

    model_config = ConfigDict(
        from_attributes=True, populate_by_name=True, json_schema_serialization_defaults_required=True
    )


def columns(row: Any) -> dict[str, Any]:
    """A row's columns by name (for a response whose nested parts are read from the same row)."""
    return dict(row if isinstance(row, Mapping) else row._mapping)


def json_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """``model`` as a JSON response, serialized once by pydantic (a ``JSONResponse`` of
    ``model_dump(mode="json")`` builds the same body in two passes: a dict, then ``json.dumps``)."""
    return Response(model.model_dump_json(), status_code, headers, media_type="application/json")


def etag(version: int | str) -> str:
    """A strong ETag for a row version."""
    return f'"{version}"'


def matches_etag(header: str | None, current: str) -> bool:
    """Whether an ``If-Match`` / ``If-None-Match`` header names ``current`` (or is ``*``)."""
    if header is None:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or current in tags


def check_if_match(request: Request, current: str) -> None:
    """Honour ``If-Match``: 412 when the client's copy is not the current one."""
    header = request.headers.get("if-match")
    if header is None or matches_etag(header, current):
        return
    raise Problem(
        412,
        "Precondition Failed",
        "The resource changed since you read it; fetch it again and retry with its new ETag.",
        type="precondition-failed",
        current_etag=current,
    )
