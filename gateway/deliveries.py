"""The webhook dispatcher: claims due deliveries, POSTs them signed, retries, logs every attempt.

(Longer than 500 lines on purpose: claim, attempt and outcome are one state machine around
one claim token and lease; apart, each part would need the others' internals.)

Safe with several gateway replicas on one database: a dispatcher claims a batch of due
deliveries in one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's
single writer serialises claims) by moving their due time past the attempt (a lease) and
writing a claim token; the HTTP call runs outside any transaction; the outcome is written
only if the claim still holds. A replica that dies mid-attempt leaves the delivery due
again when the lease ends (at-least-once; ``webhook-id`` lets receivers drop the repeat).

Each attempt POSTs the CloudEvent JSON with the Standard Webhooks headers through one
long-lived aiohttp session, with a timeout per attempt and no redirects followed. A 2xx
is delivered; anything else is retried after the next delay of the schedule (Standard
Webhooks: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), then ``failed``. A subscription whose
deliveries failed ``webhook_disable_after_failed_deliveries`` times in a row is disabled
(its pending deliveries fail with it); a successful redelivery enables it again.

One receiver's slowness stays its own: a dispatcher has at most
``webhook_concurrency_per_endpoint`` attempts in flight to one subscription and
``webhook_concurrency_per_owner`` to the subscriptions of one owner, out of its
``webhook_concurrency`` slots. A claim skips the subscriptions and owners at their bound and
takes each subscription's oldest due deliveries in turns (first of each, then second of
each...), so a slow endpoint's backlog waits in its own queue in the table while the other
endpoints' deliveries go out; it never fills the slots or the claim batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import sqlalchemy as sa
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from gateway.metrics import (
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DELIVERIES_FAILED,
    WEBHOOK_ENDPOINTS_DISABLED_TOTAL,
)
from gateway.models import webhook_attempts, webhook_events
from gateway.settings import GatewaySettings
from gateway.webhooks import (
    SecretBox,
    deliveries,
    is_public_address,
    key_still_valid,
    literal_address,
    signature,
    subscriptions,
    with_owner_key,
)
from shared import tracing
from shared.db import Database, utcnow
from shared.events import CONTENT_TYPE
from shared.tasks import cancel_requested, stop_task

log = logging.getLogger("seedbed.gateway.webhooks")

USER_AGENT = "Seedbed-Webhooks/1.0"
LEASE_MARGIN_SECONDS = 30.0
PURGE_EVERY_SECONDS = 3600.0
RESPONSE_READ_LIMIT = 64 * 1024


class PublicAddressResolver(AbstractResolver):
    """Resolves through the default resolver and keeps only public addresses (SSRF guard,
    checked at every connection, so a name re-pointed at an internal address is refused)."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [result for result in found if is_public_address(result["host"])]
        if not public:
            raise OSError(f"{host} resolves to no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    subscription_id: uuid.UUID
    claim_token: uuid.UUID
    event_id: str
    url: str
    sealed_secret: str
    body: bytes
    owner: str = ""
    trace_context: str | None = None


def owner_of_subscription() -> sa.ColumnElement[str]:
    """One string per owner, as ``webhooks.Owner.clause`` groups them: role and subject, else
    role and actor (one integrator credential)."""
    return (
        subscriptions.c.owner_role
        + ":"
        + sa.func.coalesce(subscriptions.c.owner_subject_id, subscriptions.c.owner_actor)
    )


@dataclass(frozen=True)
class Outcome:
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Dispatcher:
    def __init__(self, settings: GatewaySettings, database: Database, box: SecretBox) -> None:
        self.settings = settings
        self.database = database
        self.box = box
        self.schedule = [float(delay) for delay in settings.webhook_retry_schedule_seconds]
        self.timeout = settings.webhook_attempt_timeout_seconds
        self.lease = timedelta(seconds=self.timeout + LEASE_MARGIN_SECONDS)
        self.private_ok = settings.webhooks_may_reach_private_networks
        self.wake = asyncio.Event()
        self.attempts_total = 0
        self._slots = max(1, settings.webhook_concurrency)
        self._per_endpoint = max(1, settings.webhook_concurrency_per_endpoint)
        self._per_owner = max(1, settings.webhook_concurrency_per_owner)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._busy_endpoints: Counter[uuid.UUID] = Counter()
        self._busy_owners: Counter[str] = Counter()
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_purge = 0.0

    def poke(self) -> None:
        """Deliveries were added or made due: look now rather than at the next poll."""
        self.wake.set()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._slots,
            ttl_dns_cache=60,
            resolver=None if self.private_ok else PublicAddressResolver(),
        )
        self._http = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            trust_env=False,
            trace_configs=tracing.client_trace_configs(),
        )
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        # Let the loop finish what it is doing (a query cancelled mid-way leaves the SQLite
        # driver's thread to answer a loop that may be gone), then make sure it has stopped.
        self._stopping = True
        self.wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=2)
        await stop_task(self._task)
        self._task = None
        if self._in_flight:
            # An attempt cut short here keeps its lease and is retried when the lease ends.
            _done, pending = await asyncio.wait(list(self._in_flight), timeout=2)
            for task in pending:
                await stop_task(task)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.0
        while not (self._stopping or cancel_requested()):
            self.wake.clear()
            free = min(self._slots - len(self._in_flight), self.settings.webhook_batch_size)
            claimed: list[Claimed] = []
            due_in = float("inf")
            try:
                if free > 0:
                    # A read first: an idle dispatcher never takes SQLite's write lock.
                    due_in = await self._seconds_until_next_due()
                    if due_in <= 0:
                        claimed = await self.claim(free)
                await self._purge_now_and_then()
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = min(max(backoff * 2, 0.1), 5.0)
                log.warning(
                    "webhook dispatcher backing off", extra={"error": repr(exc), "backoff_s": backoff}
                )
                await asyncio.sleep(backoff)
                continue
            for item in claimed:
                task = asyncio.create_task(self._deliver(item), name=f"webhook-{item.delivery_id}")
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if claimed:
                continue  # more may be due
            # Due but not claimed: another replica holds those rows for a moment.
            wait = max(min(self.settings.webhook_poll_seconds, due_in), 0.01)
            if not self.wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self.wake.set()  # a slot is free

    def _not_at_their_bound(self) -> list[sa.ColumnElement[bool]]:
        """Leave out the subscriptions and owners that have all the attempts they may have."""
        clauses: list[sa.ColumnElement[bool]] = []
        endpoints = [sid for sid, busy in self._busy_endpoints.items() if busy >= self._per_endpoint]
        if endpoints:
            clauses.append(deliveries.c.subscription_id.not_in(endpoints))
        owners = [owner for owner, busy in self._busy_owners.items() if busy >= self._per_owner]
        if owners:
            clauses.append(owner_of_subscription().not_in(owners))
        return clauses

    async def _seconds_until_next_due(self) -> float:
        query = (
            sa.select(sa.func.min(deliveries.c.next_attempt_at))
            .select_from(deliveries.join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id))
            .where(deliveries.c.status == "pending", *self._not_at_their_bound())
        )
        async with self.database.transaction(write=False) as session:
            due = await session.scalar(query)
        if due is None:
            return float("inf")
        return max(0.0, (due - utcnow()).total_seconds())

    # -- claims ------------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Claimed]:
        """Take up to ``limit`` due deliveries for this dispatcher (see the module docstring)."""
        now = utcnow()
        due = (deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now)
        # Each subscription's due deliveries in turns: its oldest first, then the others'
        # oldest, so one subscription's backlog cannot take the whole batch.
        turns = (
            sa.select(
                deliveries.c.id,
                deliveries.c.next_attempt_at,
                sa.func.row_number()
                .over(
                    partition_by=deliveries.c.subscription_id,
                    order_by=(deliveries.c.next_attempt_at, deliveries.c.id),
                )
                .label("turn"),
            )
            .select_from(deliveries.join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id))
            .where(*due, *self._not_at_their_bound())
            .subquery()
        )
        picked = (
            sa.select(turns.c.id)
            .where(turns.c.turn <= self._per_endpoint)
            .order_by(turns.c.turn, turns.c.next_attempt_at)
            .limit(limit)
        )
        query = (
            sa.select(
                deliveries.c.id,
                deliveries.c.subscription_id,
                deliveries.c.event_id,
                subscriptions.c.url,
                subscriptions.c.secret,
                webhook_events.c.body,
                owner_of_subscription().label("owner"),
                webhook_events.c.trace_context,
                key_still_valid(now).label("key_valid"),
            )
            .select_from(
                with_owner_key()
                .join(deliveries, deliveries.c.subscription_id == subscriptions.c.id)
                .join(webhook_events, webhook_events.c.event_id == deliveries.c.event_id)
            )
            .where(*due, deliveries.c.id.in_(picked.scalar_subquery()))
            .order_by(deliveries.c.next_attempt_at)
        )
        if not self.database.is_sqlite:
            query = query.with_for_update(of=deliveries, skip_locked=True)
        token = uuid.uuid4()
        async with self.database.transaction() as session:
            rows = (await session.execute(query)).all()
            if not rows:
                return []
            revoked = [row.id for row in rows if not row.key_valid]
            if revoked:
                await session.execute(
                    sa.update(deliveries)
                    .where(deliveries.c.id.in_(revoked))
                    .values(
                        status="failed",
                        next_attempt_at=None,
                        claim_token=None,
                        last_error="the API key that made the subscription is revoked or expired",
                    )
                )
            taken = self._within_bounds([row for row in rows if row.key_valid])
            if taken:
                await session.execute(
                    sa.update(deliveries)
                    .where(deliveries.c.id.in_([row.id for row in taken]))
                    .values(next_attempt_at=now + self.lease, claim_token=token)
                )
        claimed = [
            Claimed(
                row.id,
                row.subscription_id,
                token,
                row.event_id,
                row.url,
                row.secret,
                row.body,
                row.owner,
                row.trace_context,
            )
            for row in taken
        ]
        for item in claimed:
            self._busy_endpoints[item.subscription_id] += 1
            self._busy_owners[item.owner] += 1
        return claimed

    def _within_bounds(self, rows: list[Any]) -> list[Any]:
        """The rows this dispatcher may start now; the others stay due for a later claim."""
        endpoints = Counter(self._busy_endpoints)
        owners = Counter(self._busy_owners)
        taken = []
        for row in rows:
            if endpoints[row.subscription_id] >= self._per_endpoint or owners[row.owner] >= self._per_owner:
                continue
            endpoints[row.subscription_id] += 1
            owners[row.owner] += 1
            taken.append(row)
        return taken

    def _release(self, item: Claimed) -> None:
        for counter, key in ((self._busy_endpoints, item.subscription_id), (self._busy_owners, item.owner)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    # -- one attempt -------------------------------------------------------------------------

    async def _deliver(self, item: Claimed) -> None:
        try:
            outcome = await self.attempt(item)
            self.attempts_total += 1
            WEBHOOK_ATTEMPTS.labels("delivered" if outcome.delivered else "failed").inc()
            await self.record(item, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook attempt not recorded", extra={"delivery_id": str(item.delivery_id)})
        finally:
            self._release(item)

    async def attempt(self, item: Claimed) -> Outcome:
        assert self._http is not None
        started_at = utcnow()
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            secret = self.box.open(item.sealed_secret, item.subscription_id)
            host = urlsplit(item.url).hostname or ""
            literal = literal_address(host)
            if not self.private_ok and literal is not None and not is_public_address(literal):
                raise OSError(f"{literal} is not a public address")
            timestamp = int(time.time())
            headers = {
                "Content-Type": CONTENT_TYPE,
                "webhook-id": item.event_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature(secret, item.event_id, timestamp, item.body),
            }
            with tracing.continuing(item.trace_context):
                async with self._http.post(
                    item.url, data=item.body, headers=headers, allow_redirects=False
                ) as answer:
                    status = answer.status
                    await answer.content.read(RESPONSE_READ_LIMIT)
                    if not 200 <= status < 300:
                        error = f"the receiver answered {status}"
        except TimeoutError:
            error = f"no answer within {self.timeout:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        duration_ms = round((time.perf_counter() - started) * 1000)
        return Outcome(started_at, duration_ms, status, error)

    async def record(self, item: Claimed, outcome: Outcome) -> None:
        """Log the attempt and, if the claim still holds, move the delivery on."""
        now = utcnow()
        async with self.database.transaction() as session:
            current = (
                await session.execute(
                    sa.select(deliveries.c.claim_token, deliveries.c.retries_used, deliveries.c.status).where(
                        deliveries.c.id == item.delivery_id
                    )
                )
            ).one_or_none()
            if current is None:
                return  # the subscription was deleted meanwhile
            await session.execute(
                sa.insert(webhook_attempts).values(
                    delivery_id=item.delivery_id,
                    attempted_at=outcome.attempted_at,
                    duration_ms=outcome.duration_ms,
                    status_code=outcome.status_code,
                    error=outcome.error,
                )
            )
            mine = current.claim_token == item.claim_token and current.status == "pending"
            changes: dict[str, Any] = {
                "attempts": deliveries.c.attempts + 1,
                "last_attempt_at": outcome.attempted_at,
                "last_status_code": outcome.status_code,
                "last_error": outcome.error,
            }
            if not mine:
                await session.execute(
                    sa.update(deliveries).where(deliveries.c.id == item.delivery_id).values(**changes)
                )
                return
            changes["claim_token"] = None
            if outcome.delivered:
                changes |= {"status": "delivered", "delivered_at": now, "next_attempt_at": None}
            elif current.retries_used < len(self.schedule):
                delay = self.schedule[current.retries_used]
                changes |= {
                    "next_attempt_at": now + timedelta(seconds=delay),
                    "retries_used": current.retries_used + 1,
                }
            else:
                changes |= {"status": "failed", "next_attempt_at": None}
                WEBHOOK_DELIVERIES_FAILED.inc()
            await session.execute(
                sa.update(deliveries).where(deliveries.c.id == item.delivery_id).values(**changes)
            )
            if outcome.delivered:
                await self._succeeded(session, item.subscription_id)
            elif changes.get("status") == "failed":
                await self._failed(session, item.subscription_id, now)
        if changes.get("next_attempt_at") is not None:
            self.wake.set()  # the retry may be due before the next poll

    async def _succeeded(self, session: Any, subscription_id: uuid.UUID) -> None:
        await session.execute(
            sa.update(subscriptions)
            .where(subscriptions.c.id == subscription_id)
            .values(consecutive_failures=0, active=True, disabled_at=None, disabled_reason=None)
        )

    async def _failed(self, session: Any, subscription_id: uuid.UUID, now: datetime) -> None:
        failures = await session.scalar(
            sa.update(subscriptions)
            .where(subscriptions.c.id == subscription_id)
            .values(consecutive_failures=subscriptions.c.consecutive_failures + 1)
            .returning(subscriptions.c.consecutive_failures)
        )
        limit = self.settings.webhook_disable_after_failed_deliveries
        if failures is None or limit <= 0 or failures < limit:
            return
        reason = f"disabled after {failures} failed deliveries in a row"
        await session.execute(
            sa.update(subscriptions)
            .where(subscriptions.c.id == subscription_id, subscriptions.c.active)
            .values(active=False, disabled_at=now, disabled_reason=reason)
        )
        await session.execute(
            sa.update(deliveries)
            .where(deliveries.c.subscription_id == subscription_id, deliveries.c.status == "pending")
            .values(
                status="failed", next_attempt_at=None, claim_token=None, last_error=f"subscription {reason}"
            )
        )
        WEBHOOK_ENDPOINTS_DISABLED_TOTAL.inc()
        log.warning("webhook subscription disabled", extra={"subscription_id": str(subscription_id)})

    # -- retention ---------------------------------------------------------------------------

    async def _purge_now_and_then(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._last_purge < PURGE_EVERY_SECONDS:
            return
        self._last_purge = loop_time
        await self.purge(utcnow() - timedelta(days=self.settings.webhook_retention_days))

    async def purge(self, before: datetime) -> None:
        """Forget finished deliveries (and their log) made before ``before``, and the events
        no delivery needs any more."""
        async with self.database.transaction() as session:
            await session.execute(
                sa.delete(deliveries).where(
                    deliveries.c.status != "pending", deliveries.c.created_at < before
                )
            )
            await session.execute(
                sa.delete(webhook_events).where(
                    webhook_events.c.received_at < before,
                    ~sa.exists().where(deliveries.c.event_id == webhook_events.c.event_id),
                )
            )
