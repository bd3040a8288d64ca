"""Webhook subscriptions: owners, secrets, signatures, the URL policy, and the fan-out of events.

A subscription belongs to the principal that made it. Staff see and manage every
subscription; an anchor those of its anchor (any of its keys); an integrator, which is bound
to no subject, those made with the same credential (``actor``: one integrator cannot see
another's). Another owner's subscription answers 404. A subscription made with an API key
delivers only while that key is valid: revoking the key stops its deliveries.

Signing follows Standard Webhooks: the secret is ``whsec_<base64 of 32 random bytes>``,
shown once at creation; ``webhook-signature`` is
``v1,<base64 HMAC-SHA256(secret bytes, "{webhook-id}.{webhook-timestamp}.{body}")>`` and
``webhook-id`` is the event id, the same on every retry, so receivers can drop repeats.
The secret has to be read back to sign, so it is stored, encrypted (AES-GCM under a key
derived from ``GATEWAY_WEBHOOK_ENCRYPTION_KEY``, else from the API key pepper, bound to the
subscription id): a copy of the database alone does not give the secrets away.

The fan-out is the handler of the durable consumer ``gateway-webhooks`` on ``SEEDBED_EVENTS``
(``shared.inbox``): each event becomes one delivery row per matching active subscription, in
the same transaction as the inbox row, so an event is fanned out exactly once. A
subscription gets the events that happened after it was made (by the event's ``time``), of
the types its patterns match and its owner's role may see (``gateway.visibility``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth import Credential
from gateway.models import (
    api_keys,
    webhook_attempts,
    webhook_deliveries,
    webhook_events,
    webhook_subscriptions,
)
from gateway.settings import GatewaySettings
from gateway.visibility import TypePattern, matches_any, may_receive, may_see, parse_pattern
from shared import tracing
from shared.db import insert_of, utcnow
from shared.events import CloudEvent
from shared.pagination import Keyset

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format of Standard Webhooks secrets, not a secret
SECRET_BYTES = 32
_KEY_LABEL = b"seedbed webhook secrets v1"
_SEALED_PREFIX = "v1."
_DEVELOPMENT_KEY_MATERIAL = b"seedbed-development-webhook-key"

subscriptions = webhook_subscriptions
deliveries = webhook_deliveries

# -- owners ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """Who is asking: the principal of the request and the API key it used, if any."""

    role: str
    subject_id: str | None
    actor: str
    key_id: uuid.UUID | None = None

    @classmethod
    def of(cls, credential: Credential) -> Owner:
        principal = credential.principal
        return cls(principal.role, principal.subject_id, principal.actor, credential.key_id)

    @property
    def is_staff(self) -> bool:
        return self.role == "staff"

    def clause(self) -> sa.ColumnElement[bool]:
        """The subscriptions this caller may see and manage."""
        if self.is_staff:
            return sa.true()
        if self.subject_id is not None:
            return sa.and_(
                subscriptions.c.owner_role == self.role, subscriptions.c.owner_subject_id == self.subject_id
            )
        return sa.and_(subscriptions.c.owner_role == self.role, subscriptions.c.owner_actor == self.actor)


# -- secrets and signatures ------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (Standard Webhooks, ``v1`` = HMAC-SHA256)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class SecretBox:
    """Seals webhook secrets for storage (AES-GCM, the subscription id as associated data)."""

    def __init__(self, settings: GatewaySettings) -> None:
        material = (
            settings.webhook_encryption_key.get_secret_value().encode()
            or settings.api_key_pepper.get_secret_value().encode()
            or _DEVELOPMENT_KEY_MATERIAL  # production refuses an empty pepper (gateway.settings)
        )
        self._aead = AESGCM(hmac.new(material, _KEY_LABEL, hashlib.sha256).digest())

    def seal(self, secret: str, subscription_id: uuid.UUID) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), subscription_id.bytes)
        return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, subscription_id: uuid.UUID) -> str:
        if not sealed.startswith(_SEALED_PREFIX):
            raise ValueError("not a sealed webhook secret")
        raw = base64.urlsafe_b64decode(sealed[len(_SEALED_PREFIX) :])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], subscription_id.bytes).decode()
        except InvalidTag as exc:
            raise ValueError("the webhook secret cannot be opened with this key") from exc


# -- the URL policy --------------------------------------------------------------------------


# IPv6 forms that carry an IPv4 address a router or translator may deliver to (RFC 6052 NAT64,
# RFC 4291 IPv4-compatible); 6to4, Teredo and IPv4-mapped have their own ipaddress properties.
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: the IPv4 part may sit anywhere
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, 6to4, NAT64, Teredo)."""
    found = [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour) if v4 is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)  # its server and its client
    if ip in NAT64_WELL_KNOWN or ip in IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public_address(address: str) -> bool:
    """A globally reachable unicast address (not loopback, private, link-local, reserved...),
    an IPv6 one only if every IPv4 address it embeds is one too."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL_USE:
            return False
        embedded = embedded_ipv4(ip)
        if ip.ipv4_mapped is not None:
            candidates = []  # an IPv4 address written as IPv6: its IPv4 form decides
        candidates.extend(embedded)
    return all(candidate.is_global and not candidate.is_multicast for candidate in candidates)


def literal_address(host: str) -> str | None:
    """The host of a URL when it is an IP address (brackets of IPv6 removed), else None."""
    candidate = host.strip("[]")
    try:
        ipaddress.ip_address(candidate.split("%", 1)[0])
    except ValueError:
        return None
    return candidate


async def check_url(url: str, settings: GatewaySettings) -> str:
    """The URL a subscription may deliver to, or ValueError saying why not.

    https only in production (http too in development and test); no credentials or
    fragment in the URL; unless private networks are allowed (outside production, or by
    ``GATEWAY_WEBHOOK_ALLOW_PRIVATE_NETWORKS``), the host must resolve to public addresses
    only. The dispatcher checks the addresses again at every connection (DNS can change).
    """
    parts = urlsplit(url)
    allowed = ("https",) if settings.environment == "production" else ("https", "http")
    if parts.scheme not in allowed:
        raise ValueError(f"the URL must use {' or '.join(allowed)}")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL must not carry credentials; verify the signature instead")
    if parts.fragment:
        raise ValueError("the URL must not have a fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("the URL's port is not valid") from exc
    if settings.webhooks_may_reach_private_networks:
        return url
    literal = literal_address(parts.hostname)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, port or 443, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise ValueError(f"the host {parts.hostname} does not resolve") from exc
        addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(is_public_address(address) for address in addresses):
        raise ValueError(
            f"the host {parts.hostname} resolves to a loopback, private or link-local address; "
            "webhooks go to public addresses only"
        )
    return url


# -- subscriptions ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _parsed(types: tuple[str, ...]) -> tuple[TypePattern, ...]:
    return tuple(parse_pattern(text) for text in types)


def key_still_valid(now: datetime) -> sa.ColumnElement[bool]:
    """The subscription was made without an API key, or its key is neither revoked nor expired."""
    return sa.or_(
        subscriptions.c.owner_key_id.is_(None),
        sa.and_(
            api_keys.c.revoked_at.is_(None),
            sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
        ),
    )


def with_owner_key() -> sa.FromClause:
    return subscriptions.outerjoin(api_keys, api_keys.c.id == subscriptions.c.owner_key_id)


async def create_subscription(
    session: AsyncSession,
    owner: Owner,
    box: SecretBox,
    *,
    url: str,
    types: Sequence[str],
    description: str | None,
) -> tuple[Any, str]:
    """The new subscription's row and its secret (to show once)."""
    subscription_id = uuid.uuid4()
    secret = new_secret()
    await session.execute(
        sa.insert(subscriptions).values(
            id=subscription_id,
            owner_role=owner.role,
            owner_subject_id=owner.subject_id,
            owner_actor=owner.actor,
            owner_key_id=owner.key_id,
            url=url,
            types=list(types),
            description=description,
            secret=box.seal(secret, subscription_id),
            active=True,
            consecutive_failures=0,
            created_at=utcnow(),
        )
    )
    row = await get_subscription(session, owner, subscription_id)
    assert row is not None
    return row, secret


async def count_subscriptions(session: AsyncSession, owner: Owner) -> int:
    """How many subscriptions the caller holds (staff: all of them)."""
    count = await session.scalar(sa.select(sa.func.count()).select_from(subscriptions).where(owner.clause()))
    return int(count or 0)


async def get_subscription(session: AsyncSession, owner: Owner, subscription_id: uuid.UUID) -> Any | None:
    """The subscription if it exists and the caller may see it (else None: 404 either way)."""
    return (
        await session.execute(
            sa.select(subscriptions).where(subscriptions.c.id == subscription_id, owner.clause())
        )
    ).one_or_none()


SUBSCRIPTION_ORDER = Keyset(subscriptions.c.created_at, subscriptions.c.id)
DELIVERY_ORDER = Keyset(deliveries.c.created_at, deliveries.c.id, descending=True)


async def list_subscriptions(
    session: AsyncSession, owner: Owner, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """The caller's subscriptions, oldest first, one page after ``cursor``, and the next cursor."""
    return await SUBSCRIPTION_ORDER.page(
        session, sa.select(subscriptions).where(owner.clause()), cursor, limit
    )


async def set_subscription_state(
    session: AsyncSession,
    owner: Owner,
    subscription_id: uuid.UUID,
    *,
    active: bool | None,
    description: str | None,
    change_description: bool,
) -> Any | None:
    """Pause (``active`` false: nothing is queued for it) or resume it, or change its
    description; the row after the change, None if the caller has no such subscription."""
    values: dict[str, Any] = {}
    if active is True:
        values |= {"active": True, "disabled_at": None, "disabled_reason": None, "consecutive_failures": 0}
    elif active is False:
        values |= {"active": False, "disabled_at": utcnow(), "disabled_reason": "disabled by its owner"}
    if change_description:
        values["description"] = description
    if values:
        query = sa.update(subscriptions).where(subscriptions.c.id == subscription_id, owner.clause())
        if active is False:  # pausing a paused subscription keeps when and why it stopped
            query = query.where(subscriptions.c.active)
        await session.execute(query.values(**values))
    return await get_subscription(session, owner, subscription_id)


async def delete_subscription(session: AsyncSession, owner: Owner, subscription_id: uuid.UUID) -> bool:
    """Delete it with its deliveries and their log (pending ones will never be sent)."""
    result = await session.execute(
        sa.delete(subscriptions).where(subscriptions.c.id == subscription_id, owner.clause())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# -- deliveries ------------------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession,
    subscription_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    status: str | None,
) -> tuple[list[tuple[Any, list[Any]]], str | None]:
    """A page of a subscription's deliveries, newest first, each with its attempts (oldest first),
    and the next cursor."""
    query = sa.select(deliveries).where(deliveries.c.subscription_id == subscription_id)
    if status is not None:
        query = query.where(deliveries.c.status == status)
    rows, next_cursor = await DELIVERY_ORDER.page(session, query, cursor, limit)
    attempts: dict[uuid.UUID, list[Any]] = {row.id: [] for row in rows}
    if rows:
        logged = await session.execute(
            sa.select(webhook_attempts)
            .where(webhook_attempts.c.delivery_id.in_(list(attempts)))
            .order_by(webhook_attempts.c.id)
        )
        for attempt in logged:
            attempts[attempt.delivery_id].append(attempt)
    return [(row, attempts[row.id]) for row in rows], next_cursor


async def get_delivery(
    session: AsyncSession, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> Any | None:
    return (
        await session.execute(
            sa.select(deliveries).where(
                deliveries.c.id == delivery_id, deliveries.c.subscription_id == subscription_id
            )
        )
    ).one_or_none()


async def attempts_of(session: AsyncSession, delivery_id: uuid.UUID) -> list[Any]:
    query = (
        sa.select(webhook_attempts)
        .where(webhook_attempts.c.delivery_id == delivery_id)
        .order_by(webhook_attempts.c.id)
    )
    return list((await session.execute(query)).all())


async def schedule_redelivery(
    session: AsyncSession, subscription_id: uuid.UUID, delivery_id: uuid.UUID, retries: int
) -> bool:
    """One more attempt, now, whatever the delivery's state (no automatic retries after it).

    An attempt in flight at this moment loses its claim: its outcome is logged but no longer
    decides the delivery's state."""
    result = await session.execute(
        sa.update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.subscription_id == subscription_id)
        .values(status="pending", next_attempt_at=utcnow(), claim_token=None, retries_used=retries)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


# -- the fan-out -----------------------------------------------------------------------------


class WebhookFanOut:
    """The handler of the ``gateway-webhooks`` consumer: one event -> its deliveries."""

    def __init__(self, on_committed: Callable[[list[uuid.UUID]], None]) -> None:
        self.on_committed = on_committed  # wakes the dispatcher once the deliveries are committed

    async def __call__(self, session: AsyncSession, event: CloudEvent) -> None:
        now = utcnow()
        owned_body = {"data": event.data}  # what may_receive reads of an event about one anchor's line
        candidates = (
            await session.execute(
                sa.select(
                    subscriptions.c.id,
                    subscriptions.c.owner_role,
                    subscriptions.c.owner_subject_id,
                    subscriptions.c.types,
                    subscriptions.c.created_at,
                )
                .select_from(with_owner_key())
                .where(subscriptions.c.active, key_still_valid(now))
            )
        ).all()
        matched = [
            row.id
            for row in candidates
            if row.created_at <= event.time
            and may_see(row.owner_role, event.type)
            and matches_any(_parsed(tuple(row.types)), event.type)
            and may_receive(row.owner_role, row.owner_subject_id, event.type, owned_body)
        ]
        if not matched:
            return
        await session.execute(
            insert_of(session, webhook_events)
            .values(
                event_id=event.id,
                event_type=event.type,
                body=event.to_bytes(),
                received_at=now,
                trace_context=tracing.stored_context(),
            )
            .on_conflict_do_nothing(index_elements=[webhook_events.c.event_id])
        )
        await session.execute(
            insert_of(session, deliveries)
            .values(
                [
                    {
                        "id": uuid.uuid4(),
                        "subscription_id": subscription_id,
                        "event_id": event.id,
                        "event_type": event.type,
                        "status": "pending",
                        "attempts": 0,
                        "retries_used": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                    for subscription_id in matched
                ]
            )
            .on_conflict_do_nothing(index_elements=[deliveries.c.subscription_id, deliveries.c.event_id])
        )

        def committed(_session: object) -> None:
            self.on_committed(matched)

        sa_event.listen(session.sync_session, "after_commit", committed, once=True)
