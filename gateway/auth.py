"""Who is calling: API keys, the bootstrap staff key and OIDC tokens, verified and cached.

A verified credential is kept in memory (keyed by the HMAC of the presented
token, so no plaintext is held) together with its encoded principal, ready to
sign. Revocation is immediate on the replica that revokes and is broadcast over
NATS core pub/sub to the others; the cache is trusted only while that
subscription is connected without a gap (a reconnect clears it, since
broadcasts may have been missed), and every entry lapses after a short TTL as
the last safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from gateway import keys
from gateway.models import oidc_principals
from gateway.oidc import OidcVerifier, TokenRejected
from gateway.settings import GatewaySettings
from shared.db import Database, insert_of, utcnow
from shared.nats import NatsLink
from shared.principal import Principal, encode_principal

log = logging.getLogger("seedbed.gateway.auth")

REVOCATION_SUBJECT = "_seedbed.gateway.api_key.revoked"
BOOTSTRAP_ACTOR = "bootstrap-staff-key"
NEGATIVE_CACHE_SECONDS = 5.0
OIDC_SEEN_RECORD_SECONDS = 3600.0


class AuthError(Exception):
    """The credential is not acceptable (401); the message is the problem detail."""


@dataclass(slots=True)
class Credential:
    """A verified credential and everything a request needs from it."""

    principal: Principal
    payload: str  # the encoded principal, signed per request into X-Seedbed-Principal
    kind: str  # "api_key", "oidc", "bootstrap" or "public"
    limit_key: str  # the rate-limit bucket
    rate_limit_per_minute: int
    key_id: uuid.UUID | None = None
    name: str | None = None
    expires_at: datetime | None = None
    cached_until: float = 0.0  # monotonic
    extra: dict[str, Any] = field(default_factory=dict)


def make_credential(principal: Principal, kind: str, limit_key: str, rate: int, **fields: Any) -> Credential:
    return Credential(principal, encode_principal(principal), kind, limit_key, rate, **fields)


def public_credential(client_address: str, rate: int) -> Credential:
    """The ``public`` principal (no subject) for a credential-less calendar feed."""
    principal = Principal(role="public", subject_id=None, actor="public")
    return make_credential(principal, "public", f"public:{client_address}", rate)


class CredentialCache:
    """Verified credentials by token digest, with a TTL, a size bound and revocation."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[bytes, Credential] = {}
        self._by_key_id: dict[uuid.UUID, set[bytes]] = {}
        self._failures: dict[bytes, float] = {}
        # Grows with every revocation: a verification that started before one does not cache.
        self.generation = 0

    def get(self, digest: bytes, now: float) -> Credential | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.cached_until <= now:
            self._drop(digest)
            return None
        return entry

    def put(self, digest: bytes, credential: Credential, now: float, generation: int) -> None:
        if generation != self.generation:
            return
        if len(self._entries) >= self.size:
            self._drop(next(iter(self._entries)))  # the oldest entry
        credential.cached_until = now + self.ttl
        if credential.expires_at is not None:
            remaining = (credential.expires_at - datetime.now(UTC)).total_seconds()
            credential.cached_until = min(credential.cached_until, now + max(remaining, 0.0))
        self._entries[digest] = credential
        if credential.key_id is not None:
            self._by_key_id.setdefault(credential.key_id, set()).add(digest)

    def failed_recently(self, digest: bytes, now: float) -> bool:
        until = self._failures.get(digest)
        if until is None:
            return False
        if until <= now:
            del self._failures[digest]
            return False
        return True

    def remember_failure(self, digest: bytes, now: float) -> None:
        if len(self._failures) >= self.size:
            self._failures.clear()
        self._failures[digest] = now + NEGATIVE_CACHE_SECONDS

    def revoke(self, key_id: uuid.UUID) -> None:
        self.generation += 1
        for digest in self._by_key_id.pop(key_id, set()):
            self._entries.pop(digest, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_key_id.clear()

    def _drop(self, digest: bytes) -> None:
        entry = self._entries.pop(digest, None)
        if entry is not None and entry.key_id is not None:
            digests = self._by_key_id.get(entry.key_id)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del self._by_key_id[entry.key_id]

    def __len__(self) -> int:
        return len(self._entries)


class Authenticator:
    def __init__(
        self,
        settings: GatewaySettings,
        database: Database,
        link: NatsLink | None,
        oidc: OidcVerifier | None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.link = link
        self.oidc = oidc
        self.pepper = settings.api_key_pepper.get_secret_value().encode()
        self.cache = CredentialCache(settings.credential_cache_seconds, settings.credential_cache_size)
        bootstrap = settings.bootstrap_staff_key
        self._bootstrap_digest = (
            keys.key_digest(self.pepper, bootstrap.get_secret_value())
            if bootstrap and bootstrap.get_secret_value()
            else None
        )
        self._bootstrap = make_credential(
            Principal(role="staff", subject_id=None, actor=BOOTSTRAP_ACTOR),
            "bootstrap",
            BOOTSTRAP_ACTOR,
            settings.staff_rate_limit_per_minute,
            name="bootstrap staff key",
        )
        self._subscription: Any = None
        self._subscriber: asyncio.Task[None] | None = None
        self._link_epoch: tuple[int, int] | None = None  # (connection id, reconnects) the cache trusts
        self._oidc_recorded: dict[tuple[str, str], float] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.oidc is not None:
            await self.oidc.start()
        if self.link is not None:
            self._subscriber = asyncio.create_task(self._subscribe(), name="gateway-revocations")

    async def stop(self) -> None:
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        if self._background:
            # Let the last principal records land (before the database closes), then give up.
            _done, pending = await asyncio.wait(list(self._background), timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _subscribe(self) -> None:
        assert self.link is not None
        await self.link.wait_ready()
        self._subscription = await self.link.nc.subscribe(REVOCATION_SUBJECT, cb=self._on_revocation)

    async def _on_revocation(self, message: Any) -> None:
        try:
            key_id = uuid.UUID(message.data.decode())
        except ValueError:
            return
        self.cache.revoke(key_id)

    def _cache_trusted(self) -> bool:
        """The cache holds only while revocation broadcasts are reaching us without a gap."""
        link = self.link
        if link is None:
            return True
        epoch = link.connection_epoch
        if epoch is None or self._subscription is None:
            if self._link_epoch is not None:
                self.cache.clear()
                self._link_epoch = None
            return False
        if epoch != self._link_epoch:
            # New or re-made connection: broadcasts sent during the gap were missed.
            self.cache.clear()
            self._link_epoch = epoch
        return True

    # -- authentication --------------------------------------------------------------------

    async def authenticate(self, token: str) -> Credential:
        digest = keys.key_digest(self.pepper, token)
        if self._bootstrap_digest is not None and hmac.compare_digest(digest, self._bootstrap_digest):
            return self._bootstrap
        now = time.monotonic()
        trusted = self._cache_trusted()
        if trusted:
            cached = self.cache.get(digest, now)
            if cached is not None:
                return cached
        # Refused API keys are remembered briefly: garbage keys must not cost a query each.
        # (Not tokens: they cost no query, and one refused for an unknown kid may verify
        # a moment later, once the identity provider's rotated key set is fetched.)
        is_key = keys.lookup_of(token) is not None
        if is_key and self.cache.failed_recently(digest, now):
            raise AuthError("The API key is not valid.")
        generation = self.cache.generation
        try:
            credential = await self._verify(token, digest)
        except AuthError:
            if is_key:
                self.cache.remember_failure(digest, now)
            raise
        if trusted:
            self.cache.put(digest, credential, now, generation)
        return credential

    async def _verify(self, token: str, digest: bytes) -> Credential:
        lookup = keys.lookup_of(token)
        if lookup is not None:
            return await self._verify_key(lookup, digest)
        if self.oidc is not None and token.count(".") == 2:
            try:
                verified = await self.oidc.verify(token)
            except TokenRejected as exc:
                raise AuthError(f"The bearer token is not valid: {exc}.") from exc
            principal = Principal(
                role=verified.role,  # type: ignore[arg-type]
                subject_id=verified.subject_id,
                actor=f"oidc:{verified.subject}"[:200],
            )
            self._record_oidc_principal(verified.issuer, verified.subject, principal)
            return make_credential(
                principal,
                "oidc",
                principal.actor,
                self._role_rate(principal.role),
                expires_at=datetime.fromtimestamp(verified.expires_at, UTC),
                extra={"issuer": verified.issuer},
            )
        raise AuthError("The credential is not a Seedbed API key or an accepted bearer token.")

    async def _verify_key(self, lookup: str, digest: bytes) -> Credential:
        async with self.database.transaction(write=False) as session:
            record = await keys.find_by_lookup(session, lookup)
        # Compare even when no row was found, so timing does not tell the two apart.
        expected = bytes.fromhex(record.key_hash) if record else bytes(32)
        if not hmac.compare_digest(digest, expected) or record is None:
            raise AuthError("The API key is not valid.")
        now = utcnow()
        if record.revoked_at is not None:
            raise AuthError("The API key has been revoked.")
        if record.expires_at is not None and record.expires_at <= now:
            raise AuthError("The API key has expired.")
        principal = Principal(
            role=record.role,  # type: ignore[arg-type]
            subject_id=record.subject_id,
            actor=f"key:{record.id}",
        )
        return make_credential(
            principal,
            "api_key",
            f"key:{record.id}",
            record.rate_limit_per_minute or self._role_rate(principal.role),
            key_id=record.id,
            name=record.name,
            expires_at=record.expires_at,
        )

    def _role_rate(self, role: str) -> int:
        if role == "staff":
            return self.settings.staff_rate_limit_per_minute
        return self.settings.rate_limit_per_minute

    # -- revocation ------------------------------------------------------------------------

    async def revoked(self, key_id: uuid.UUID) -> None:
        """Forget a key here at once and tell the other replicas (call after the commit)."""
        self.cache.revoke(key_id)
        if self.link is None or not self.link.connected:
            log.warning("revocation not broadcast: NATS is not connected", extra={"key_id": str(key_id)})
            return
        try:
            # No flush(timeout=...): a timed-out flush leaves nats-py a PONG future that kills
            # its read loop when the PONG comes (see shared.nats); the client sends it at once.
            await self.link.nc.publish(REVOCATION_SUBJECT, str(key_id).encode())
        except Exception as exc:
            log.warning("revocation not broadcast", extra={"key_id": str(key_id), "error": repr(exc)})

    # -- OIDC principals seen ----------------------------------------------------------------

    def _record_oidc_principal(self, issuer: str, subject: str, principal: Principal) -> None:
        now = time.monotonic()
        seen = self._oidc_recorded.get((issuer, subject))
        if seen is not None and now - seen < OIDC_SEEN_RECORD_SECONDS:
            return
        if len(self._oidc_recorded) > self.settings.credential_cache_size:
            self._oidc_recorded.clear()
        self._oidc_recorded[(issuer, subject)] = now
        task = asyncio.create_task(self._upsert_oidc_principal(issuer, subject, principal))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _upsert_oidc_principal(self, issuer: str, subject: str, principal: Principal) -> None:
        now = utcnow()
        values = {"role": principal.role, "subject_id": principal.subject_id, "last_seen_at": now}
        try:
            async with self.database.transaction() as session:
                statement = insert_of(session, oidc_principals).values(
                    issuer=issuer, subject=subject, first_seen_at=now, **values
                )
                await session.execute(
                    statement.on_conflict_do_update(
                        index_elements=[oidc_principals.c.issuer, oidc_principals.c.subject], set_=values
                    )
                )
        except Exception as exc:
            log.warning("OIDC principal not recorded", extra={"subject": subject, "error": repr(exc)})


async def list_oidc_principals(database: Database, since: timedelta | None = None) -> list[Any]:
    """The OIDC identities seen (newest first), for audits and tests."""
    query = sa.select(oidc_principals).order_by(oidc_principals.c.last_seen_at.desc())
    if since is not None:
        query = query.where(oidc_principals.c.last_seen_at >= utcnow() - since)
    async with database.transaction(write=False) as session:
        return list((await session.execute(query)).all())
