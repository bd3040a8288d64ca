"""Cursors of the lists in creation order (enterprises, cohorts)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from shared.http import decode_cursor, encode_cursor
from shared.problems import field_errors


def creation_key(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The (created_at, id) key a cursor of a list in creation order holds."""
    if cursor is None:
        return None
    created_at, ident = decode_cursor(cursor, 2) or [None, None]
    try:
        return datetime.fromisoformat(created_at).astimezone(UTC), uuid.UUID(ident)
    except (TypeError, ValueError) as exc:
        raise field_errors([{"field": "cursor", "message": "not a cursor issued by this API"}]) from exc


def creation_cursor(last: Any) -> str | None:
    """The cursor of the page after ``last`` in a list in creation order."""
    return None if last is None else encode_cursor([last.created_at.isoformat(), str(last.id)])
