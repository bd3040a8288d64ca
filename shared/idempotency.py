"""``Idempotency-Key`` for create requests.

The first request with a key stores its response in the same transaction as the
change it made; a retry with the same key and the same request gets that
response again (``Idempotent-Replayed: true``); the same key with a different
request is refused with 422. Keys belong to the caller and last 24 hours.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Request, Response
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Result, Row
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import KIT_METADATA, UtcDateTime, utcnow
from shared.principal import Principal
from shared.problems import Problem

HEADER = "Idempotency-Key"
KEEP_FOR = timedelta(hours=24)
REPLAYED_HEADERS = ("location", "etag", "content-type")

idempotency_table = sa.Table(
    "idempotency_keys",
    KIT_METADATA,
    sa.Column("owner", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False, index=True),
)


# Built once (only the parameters change from request to request): building them is costly.
_FIND = sa.select(idempotency_table).where(
    idempotency_table.c.owner == sa.bindparam("owner"),
    idempotency_table.c.key == sa.bindparam("key"),
    idempotency_table.c.created_at > sa.bindparam("fresh_after"),
)
_UPSERTS: dict[str, sa.Executable] = {}

STORED_FINGERPRINT: sa.Label[str | None] = (
    sa.select(idempotency_table.c.fingerprint)
    .where(
        idempotency_table.c.owner == sa.bindparam("idempotency_owner"),
        idempotency_table.c.key == sa.bindparam("idempotency_key"),
        idempotency_table.c.created_at > sa.bindparam("idempotency_fresh_after"),
    )
    .scalar_subquery()
    .label("idempotency_fingerprint")
)
"""The fingerprint stored under a request's key (NULL when none is), as a column to add to the
first read of a use case, so that a key costs no statement of its own; its parameters are
:meth:`Idempotency.lookup_params`, and the row read goes to :meth:`Idempotency.replay_found`."""


def _upsert(dialect: str) -> sa.Executable:
    """Insert a key's response in one statement: a new key is inserted, an expired one reused;
    a fresh one held by a concurrent request with the same key is left alone (no row counted)."""
    found = _UPSERTS.get(dialect)
    if found is None:
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(idempotency_table)
        kept = ("fingerprint", "status_code", "headers", "body", "created_at")
        found = _UPSERTS[dialect] = statement.on_conflict_do_update(
            index_elements=[idempotency_table.c.owner, idempotency_table.c.key],
            set_={name: statement.excluded[name] for name in kept},
            where=idempotency_table.c.created_at <= sa.bindparam("expired_before"),
        )
    return found


class Idempotency:
    """The idempotency context of one request (``key`` is None without the header)."""

    def __init__(self, key: str | None, owner: str, fingerprint: str) -> None:
        self.key = key
        self.owner = owner
        self.fingerprint = fingerprint

    async def replay(self, session: AsyncSession) -> Response | None:
        """The stored response of an earlier identical request, if any."""
        if self.key is None:
            return None
        return self._response(await self._find(session))

    def lookup_params(self) -> dict[str, Any]:
        """The parameters of :data:`STORED_FINGERPRINT` for this request (it needs a key)."""
        return {
            "idempotency_owner": self.owner,
            "idempotency_key": self.key,
            "idempotency_fresh_after": utcnow() - KEEP_FOR,
        }

    async def replay_found(self, session: AsyncSession, fingerprint: str | None) -> Response | None:
        """:meth:`replay`, given the fingerprint that :data:`STORED_FINGERPRINT` read: no statement
        when no response is stored (the usual case), 422 when it belongs to another request."""
        if self.key is None or fingerprint is None:
            return None
        self._check(fingerprint)
        return self._response(await self._find(session))

    async def _find(self, session: AsyncSession) -> Row[Any] | None:
        params = {"owner": self.owner, "key": self.key, "fresh_after": utcnow() - KEEP_FOR}
        return (await session.execute(_FIND, params)).first()

    def _check(self, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            raise Problem(
                422,
                "Idempotency-Key reused",
                "This Idempotency-Key was used for a different request; use a new key.",
                type="idempotency-key-reused",
                errors=[{"field": HEADER, "message": "already used with a different request body"}],
            )

    def _response(self, row: Row[Any] | None) -> Response | None:
        if row is None:
            return None
        self._check(row.fingerprint)
        headers = json.loads(row.headers)
        headers["Idempotent-Replayed"] = "true"
        return Response(content=row.body, status_code=row.status_code, headers=headers)

    async def remember(self, session: AsyncSession, response: Response) -> Response:
        """Store ``response`` for retries (in the caller's transaction) and return it."""
        write = self.record(session, response)
        if write is not None:
            self.check_recorded(await session.execute(*write))
        return response

    def record(self, session: AsyncSession, response: Response) -> tuple[sa.Insert, dict[str, Any]] | None:
        """What :meth:`remember` runs, as a statement and its parameters: for the caller to run
        with its other writes (:func:`shared.db.execute_together`), last, and to pass the result
        to :meth:`check_recorded`. None without a key."""
        if self.key is None:
            return None
        headers = {k: v for k, v in response.headers.items() if k.lower() in REPLAYED_HEADERS}
        now = utcnow()
        values = {
            "owner": self.owner,
            "key": self.key,
            "fingerprint": self.fingerprint,
            "status_code": response.status_code,
            "headers": json.dumps(headers),
            "body": bytes(response.body),
            "created_at": now,
            "expired_before": now - KEEP_FOR,
        }
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        return _upsert(dialect), values

    @staticmethod
    def check_recorded(result: Result[Any]) -> None:
        """409 when a concurrent request with the same key stored its response first."""
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise Problem(
                409,
                "Request in progress",
                "Another request with this Idempotency-Key was processed at the same time; "
                "retry to receive its response.",
                type="idempotency-key-in-use",
            )


async def idempotency(request: Request) -> Idempotency:
    key = request.headers.get(HEADER)
    if key is not None and not (1 <= len(key) <= 255 and key.isprintable()):
        raise Problem(
            422,
            "Request validation failed",
            "Idempotency-Key must be 1 to 255 printable characters.",
            type="validation-error",
            errors=[{"field": HEADER, "message": "must be 1 to 255 printable characters"}],
        )
    principal: Principal | None = getattr(request.state, "principal", None)
    owner = f"{principal.role}:{principal.subject_id}:{principal.actor}" if principal else "anonymous"
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.scope['path']}\n".encode())  # (request.url costs a URL)
    digest.update(await request.body())
    return Idempotency(key, owner, digest.hexdigest())


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]


async def purge_expired_keys(session: AsyncSession) -> None:
    await session.execute(
        sa.delete(idempotency_table).where(idempotency_table.c.created_at <= utcnow() - KEEP_FOR)
    )
