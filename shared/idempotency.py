"""``Idempotency-Key`` for create requests.

The first request with a key stores its response in the same transaction as the
change it made; a retry with the same key and the same request gets that
response again (``Idempotent-Replayed: true``); the same key with a different
request is refused with 422. Keys belong to the caller and last 24 hours.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, cast

import sqlalchemy as sa
from fastapi import Depends, Request, Response
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import KIT_METADATA, UtcDateTime, insert_of, utcnow
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


# Built once with bound parameters: a request then only binds them.
_FIND = sa.select(idempotency_table).where(
    idempotency_table.c.owner == sa.bindparam("owner"),
    idempotency_table.c.key == sa.bindparam("key"),
    idempotency_table.c.created_at > sa.bindparam("fresh_after"),
)


def _upsert(session: AsyncSession) -> sa.Insert:
    """Insert a key's response in one statement: a new key is inserted, an expired one reused;
    a fresh one held by a concurrent request with the same key is left alone (no row counted)."""
    statement = insert_of(session, idempotency_table)
    kept = ("fingerprint", "status_code", "headers", "body", "created_at")
    upsert: sa.Insert = statement.on_conflict_do_update(
        index_elements=[idempotency_table.c.owner, idempotency_table.c.key],
        set_={name: statement.excluded[name] for name in kept},
        where=idempotency_table.c.created_at <= sa.bindparam("expired_before"),
    )
    return upsert


class Idempotency:
    """The idempotency context of one request (``key`` is None without the header).

    A create route hands its work to :meth:`respond`::

        async def create() -> Response:
            row = await service.register_thing(db, body)  # the use case: no HTTP types
            return json_response(ThingOut.model_validate(row), status_code=201)

        return await idempotency.respond(db, create)
    """

    def __init__(self, key: str | None, owner: str, fingerprint: str) -> None:
        self.key = key
        self.owner = owner
        self.fingerprint = fingerprint

    async def respond(self, session: AsyncSession, create: Callable[[], Awaitable[Response]]) -> Response:
        """The stored response of an earlier identical request, or else ``create()``'s, stored in
        the same transaction for retries."""
        replayed = await self.replay(session)
        if replayed is not None:
            return replayed
        return await self.remember(session, await create())

    async def replay(self, session: AsyncSession) -> Response | None:
        """The stored response of an earlier identical request, if any (422 when the key was
        used for a different request)."""
        if self.key is None:
            return None
        params = {"owner": self.owner, "key": self.key, "fresh_after": utcnow() - KEEP_FOR}
        found = (await session.execute(_FIND, params)).first()
        if found is None:
            return None
        if found.fingerprint != self.fingerprint:
            raise Problem(
                422,
                "Idempotency-Key reused",
                "This Idempotency-Key was used for a different request; use a new key.",
                type="idempotency-key-reused",
                errors=[{"field": HEADER, "message": "already used with a different request body"}],
            )
        headers = json.loads(found.headers)
        headers["Idempotent-Replayed"] = "true"
        return Response(content=found.body, status_code=found.status_code, headers=headers)

    async def remember(self, session: AsyncSession, response: Response) -> Response:
        """Store ``response`` for retries (in the caller's transaction) and return it; 409 when a
        concurrent request with the same key stored its response first."""
        if self.key is None:
            return response
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
        result = await session.execute(_upsert(session), values)
        if cast("CursorResult[Any]", result).rowcount == 0:
            raise Problem(
                409,
                "Request in progress",
                "Another request with this Idempotency-Key was processed at the same time; "
                "retry to receive its response.",
                type="idempotency-key-in-use",
            )
        return response


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
    digest.update(f"{request.method} {request.url.path}\n".encode())
    digest.update(await request.body())
    return Idempotency(key, owner, digest.hexdigest())


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]


async def purge_expired_keys(session: AsyncSession) -> None:
    await session.execute(
        sa.delete(idempotency_table).where(idempotency_table.c.created_at <= utcnow() - KEEP_FOR)
    )
