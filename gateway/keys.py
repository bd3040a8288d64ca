"""API keys: their format, their hash, and the queries on the key table.

A key reads ``sbk_<lookup>_<secret>``: ``lookup`` (12 random characters) is visible
and indexed so the row is found without scanning; ``secret`` holds 256 random bits.
The table keeps only HMAC-SHA256(pepper, key). A slow password KDF (bcrypt,
argon2) exists to make guessing low-entropy passwords expensive; a 256-bit random
key cannot be guessed whatever the hash speed, so a fast keyed hash is as safe and
keeps verification in microseconds. The pepper (a server-side secret, not in the
database) means a stolen table alone cannot even confirm a key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import api_keys
from shared.db import utcnow
from shared.pagination import Key, Keyset
from shared.problems import Problem, field_errors

KEY_PREFIX = "sbk_"
LOOKUP_LENGTH = 12
SECRET_BYTES = 32
_LOOKUP_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class NewKey:
    plaintext: str  # shown to the caller once, never stored
    lookup: str


SUBJECT_OWNERS: dict[str, tuple[str, str]] = {
    "anchor": ("demand", "anchors"),
    "enterprise": ("enterprises", "enterprises"),
    "mentor": ("mentoring", "mentors"),
}
"""For each role bound to an object: the service that owns such objects, and their collection."""


async def check_subject(
    http: httpx.AsyncClient, upstreams: dict[str, str], auth: httpx.Auth, role: str, subject_id: str | None
) -> None:
    """Refuse a key bound to an object that does not exist or is not of the role's kind: the
    owning service is asked for it (as staff), 422 naming ``subject_id`` when it has none,
    503 when it cannot say."""
    if subject_id is None or role not in SUBJECT_OWNERS:
        return
    service, collection = SUBJECT_OWNERS[role]
    url = f"{upstreams[service]}/api/v1/{collection}/{subject_id}"
    unavailable = Problem(
        503,
        "Service unavailable",
        f"The {service} service could not confirm that {role} {subject_id} exists; try again.",
        type="service-unavailable",
        headers={"Retry-After": "5"},
    )
    try:
        response = await http.get(url, auth=auth, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        raise unavailable from exc
    if response.status_code == 404:
        raise field_errors(
            [{"field": "subject_id", "message": f"no {role} with this id (the {service} service has none)"}]
        )
    if response.status_code != 200:
        raise unavailable


def generate_key() -> NewKey:
    lookup = "".join(secrets.choice(_LOOKUP_ALPHABET) for _ in range(LOOKUP_LENGTH))
    return NewKey(f"{KEY_PREFIX}{lookup}_{secrets.token_urlsafe(SECRET_BYTES)}", lookup)


def lookup_of(token: str) -> str | None:
    """The visible lookup part of a key in our format, None for anything else."""
    if not token.startswith(KEY_PREFIX) or len(token) < len(KEY_PREFIX) + LOOKUP_LENGTH + 2:
        return None
    lookup = token[len(KEY_PREFIX) : len(KEY_PREFIX) + LOOKUP_LENGTH]
    if token[len(KEY_PREFIX) + LOOKUP_LENGTH] != "_" or not lookup.isalnum() or not lookup.isascii():
        return None
    return lookup


def key_digest(pepper: bytes, token: str) -> bytes:
    """HMAC-SHA256 of a presented credential (also the in-memory cache key)."""
    return hmac.new(pepper, token.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class KeyRecord:
    id: uuid.UUID
    lookup: str
    key_hash: str
    role: str
    subject_id: str | None
    name: str
    rate_limit_per_minute: int | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(**{field.name: getattr(row, field.name) for field in fields(cls)})

    @property
    def prefix(self) -> str:
        """The visible start of the key, to recognise it by."""
        return f"{KEY_PREFIX}{self.lookup}"

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


async def insert_key(
    session: AsyncSession,
    *,
    pepper: bytes,
    role: str,
    subject_id: str | None,
    name: str,
    created_by: str,
    rate_limit_per_minute: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[KeyRecord, str]:
    """A new key row; returns it with the plaintext key (the caller shows it once)."""
    new = generate_key()
    values = {
        "id": uuid.uuid4(),
        "lookup": new.lookup,
        "key_hash": key_digest(pepper, new.plaintext).hex(),
        "role": role,
        "subject_id": subject_id,
        "name": name,
        "rate_limit_per_minute": rate_limit_per_minute,
        "created_at": utcnow(),
        "created_by": created_by,
        "expires_at": expires_at,
        "revoked_at": None,
    }
    await session.execute(sa.insert(api_keys).values(**values))
    return KeyRecord(**{k: v for k, v in values.items()}), new.plaintext


async def find_by_lookup(session: AsyncSession, lookup: str) -> KeyRecord | None:
    row = (await session.execute(sa.select(api_keys).where(api_keys.c.lookup == lookup))).first()
    return KeyRecord.from_row(row) if row else None


async def get_key(session: AsyncSession, key_id: uuid.UUID) -> KeyRecord | None:
    row = (await session.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
    return KeyRecord.from_row(row) if row else None


KEY_ORDER = Keyset(api_keys.c.created_at, api_keys.c.id)


async def list_keys(
    session: AsyncSession,
    *,
    limit: int,
    after: Key | None,
    include_revoked: bool,
    role: str | None = None,
    subject_id: str | None = None,
) -> list[KeyRecord]:
    """Keys in creation order (newest last), one page after the cursor position."""
    query = KEY_ORDER.select(sa.select(api_keys), after, limit)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    if role is not None:
        query = query.where(api_keys.c.role == role)
    if subject_id is not None:
        query = query.where(api_keys.c.subject_id == subject_id)
    return [KeyRecord.from_row(row) for row in (await session.execute(query)).all()]


async def revoke_key(session: AsyncSession, key_id: uuid.UUID, revoked_by: str) -> bool:
    """Mark a key revoked (idempotent); False when there is no such key."""
    existing = await get_key(session, key_id)
    if existing is None:
        return False
    if existing.revoked_at is None:
        await session.execute(
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_by=revoked_by)
        )
    return True
