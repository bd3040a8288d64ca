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

Under a backlog the table work is done in batches, not per delivery: a claim holds up to
``QUEUED_ROUNDS`` rounds of each bound (its lease covers the wait), the endpoint is claimed for
again when half of that is spent, and the outcomes that came in meanwhile are written in one
transaction. Before each attempt the subscription is confirmed (at most once a second), so a
deletion, a revoked key or a disabling stops a held queue as it would stop the table's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections import Counter
from collections.abc import Collection
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
QUEUED_ROUNDS = 8
CONFIRM_SECONDS = 1.0
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
    lease_ends: float = float("inf")  # (time.monotonic) not attempted after this: it may be retaken


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
        # A claimed delivery may wait behind its endpoint's earlier ones: its lease covers them.
        self.lease = timedelta(seconds=QUEUED_ROUNDS * self.timeout + LEASE_MARGIN_SECONDS)
        self.private_ok = settings.webhooks_may_reach_private_networks
        self.wake = asyncio.Event()
        self.attempts_total = 0
        self._slots = max(1, settings.webhook_concurrency)
        self._per_endpoint = max(1, settings.webhook_concurrency_per_endpoint)
        self._per_owner = max(1, settings.webhook_concurrency_per_owner)
        # In flight: semaphores. Held (claimed, not yet recorded): counters, QUEUED_ROUNDS times
        # the in-flight bounds, so an endpoint's claim is made once per several rounds of attempts.
        self._endpoint_holds = self._per_endpoint * QUEUED_ROUNDS
        self._owner_holds = self._per_owner * QUEUED_ROUNDS
        self._holds = self._slots * QUEUED_ROUNDS
        self._all_gate = asyncio.Semaphore(self._slots)
        self._endpoint_gates: dict[uuid.UUID, asyncio.Semaphore] = {}
        self._owner_gates: dict[str, asyncio.Semaphore] = {}
        self._held_endpoints: Counter[uuid.UUID] = Counter()
        self._held_owners: Counter[str] = Counter()
        self._held = 0
        self._confirmed: dict[uuid.UUID, float] = {}  # subscription -> when last seen subscribed
        self._disabled_here: set[uuid.UUID] = set()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._outcomes: list[tuple[Claimed, Outcome]] = []
        self._outcomes_ready = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_purge = 0.0

    def poke(self, subscription_ids: Collection[uuid.UUID] = ()) -> None:
        """Deliveries were added or made due: look now rather than at the next poll (unless
        every endpoint named already holds all the deliveries it may)."""
        full = self._endpoint_holds
        if not subscription_ids or any(self._held_endpoints[sid] < full for sid in subscription_ids):
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
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")
        self._recorder = asyncio.create_task(self._record_outcomes(), name="webhook-recorder")

    async def stop(self) -> None:
        # Let the loops finish what they are doing (a query cancelled mid-way leaves the SQLite
        # driver's thread to answer a loop that may be gone), then make sure they have stopped.
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
        self._outcomes_ready.set()  # the recorder writes what is left, then ends
        if self._recorder is not None:
            await asyncio.wait({self._recorder}, timeout=5)
        await stop_task(self._recorder)
        self._recorder = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.0
        while not (self._stopping or cancel_requested()):
            self.wake.clear()
            room = min(self._holds - self._held, self.settings.webhook_batch_size)
            claimed: list[Claimed] = []
            due_in = float("inf")
            try:
                if room > 0:
                    # A read first: an idle dispatcher never takes SQLite's write lock.
                    due_in = await self._seconds_until_next_due()
                    if due_in <= 0:
                        claimed = await self.claim(room)
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
                task.add_done_callback(self._in_flight.discard)
            if claimed:
                continue  # more may be due
            # Due but not claimed: another replica holds those rows for a moment.
            wait = max(min(self.settings.webhook_poll_seconds, due_in), 0.01)
            if not self.wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)

    def _not_at_their_bound(self) -> list[sa.ColumnElement[bool]]:
        """Leave out the subscriptions and owners that hold all the deliveries they may."""
        clauses: list[sa.ColumnElement[bool]] = []
        endpoints = [sid for sid, held in self._held_endpoints.items() if held >= self._endpoint_holds]
        if endpoints:
            clauses.append(deliveries.c.subscription_id.not_in(endpoints))
        owners = [owner for owner, held in self._held_owners.items() if held >= self._owner_holds]
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
            .where(turns.c.turn <= self._endpoint_holds)
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
        lease_ends = time.monotonic() + QUEUED_ROUNDS * self.timeout
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
                lease_ends,
            )
            for row in taken
        ]
        for item in claimed:
            self._hold(item)
            self._confirmed[item.subscription_id] = time.monotonic()
        return claimed

    def _within_bounds(self, rows: list[Any]) -> list[Any]:
        """The rows this dispatcher may hold now; the others stay due for a later claim."""
        endpoints = Counter(self._held_endpoints)
        owners = Counter(self._held_owners)
        taken = []
        for row in rows:
            if (
                endpoints[row.subscription_id] >= self._endpoint_holds
                or owners[row.owner] >= self._owner_holds
            ):
                continue
            endpoints[row.subscription_id] += 1
            owners[row.owner] += 1
            taken.append(row)
        return taken

    def _hold(self, item: Claimed) -> None:
        self._held += 1
        self._held_endpoints[item.subscription_id] += 1
        self._held_owners[item.owner] += 1
        self._endpoint_gates.setdefault(item.subscription_id, asyncio.Semaphore(self._per_endpoint))
        self._owner_gates.setdefault(item.owner, asyncio.Semaphore(self._per_owner))

    def _release(self, item: Claimed) -> None:
        self._held -= 1
        self._held_owners[item.owner] -= 1
        owner_held = self._held_owners[item.owner]
        if owner_held <= 0:
            del self._held_owners[item.owner], self._owner_gates[item.owner]  # no holder waits on it
        sid = item.subscription_id
        self._held_endpoints[sid] -= 1
        endpoint_held = self._held_endpoints[sid]
        if endpoint_held <= 0:
            del self._held_endpoints[sid], self._endpoint_gates[sid]
            self._confirmed.pop(sid, None)
            self._disabled_here.discard(sid)
        # Claim again when a queue is half spent, not after every delivery (new ones poke).
        if (
            endpoint_held == self._endpoint_holds // 2
            or owner_held == self._owner_holds // 2
            or self._held == self._holds // 2
        ):
            self.wake.set()

    # -- one attempt -------------------------------------------------------------------------

    async def _deliver(self, item: Claimed) -> None:
        outcome: Outcome | None = None
        try:
            # Always in this order (endpoint, owner, all), so no two deliveries wait on each other.
            async with (
                self._endpoint_gates[item.subscription_id],
                self._owner_gates[item.owner],
                self._all_gate,
            ):
                if self._stopping or time.monotonic() >= item.lease_ends:
                    return  # stopping, or left too long behind a slow receiver: its lease ends
                if not await self._still_subscribed(item.subscription_id):
                    return  # deleted, its key revoked or disabled meanwhile: send nothing more
                outcome = await self.attempt(item)
            self.attempts_total += 1
            WEBHOOK_ATTEMPTS.labels("delivered" if outcome.delivered else "failed").inc()
        finally:
            if outcome is None:
                self._release(item)  # cut short: its lease makes it due again
            else:
                self._outcomes.append((item, outcome))
                self._outcomes_ready.set()

    async def _still_subscribed(self, subscription_id: uuid.UUID) -> bool:
        """Whether a held delivery may still go: its subscription exists with a valid key and
        was not disabled here (read at most once a second per subscription)."""
        if subscription_id in self._disabled_here:
            return False
        seen = self._confirmed.get(subscription_id)
        if seen is not None and time.monotonic() - seen < CONFIRM_SECONDS:
            return True
        async with self.database.transaction(write=False) as session:
            valid = await session.scalar(
                sa.select(key_still_valid(utcnow()))
                .select_from(with_owner_key())
                .where(subscriptions.c.id == subscription_id)
            )
        if valid:
            self._confirmed[subscription_id] = time.monotonic()
        return bool(valid)

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

    # -- outcomes ----------------------------------------------------------------------------

    async def _record_outcomes(self) -> None:
        """Write the attempts' outcomes, all that came in meanwhile in one transaction; told
        to end rather than cancelled, like the outbox's marker, so no write is cut short."""
        while not cancel_requested():
            await self._outcomes_ready.wait()
            self._outcomes_ready.clear()
            batch, self._outcomes = self._outcomes, []
            if batch:
                try:
                    await self.record(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Unrecorded, each keeps its lease and is attempted again when it ends.
                    log.exception("webhook attempts not recorded", extra={"deliveries": len(batch)})
                finally:
                    for item, _outcome in batch:
                        self._release(item)
            if self._stopping and not self._outcomes and all(task.done() for task in self._in_flight):
                return

    async def record(self, batch: list[tuple[Claimed, Outcome]]) -> None:
        """Log the attempts and move on each delivery whose claim still holds."""
        now = utcnow()
        ids = [item.delivery_id for item, _outcome in batch]
        async with self.database.transaction() as session:
            current = {
                row.id: row
                for row in await session.execute(
                    sa.select(
                        deliveries.c.id,
                        deliveries.c.claim_token,
                        deliveries.c.retries_used,
                        deliveries.c.status,
                    ).where(deliveries.c.id.in_(ids))
                )
            }
            batch = [(item, outcome) for item, outcome in batch if item.delivery_id in current]
            if not batch:
                return  # their subscriptions were deleted meanwhile
            await session.execute(
                sa.insert(webhook_attempts),
                [
                    {
                        "delivery_id": item.delivery_id,
                        "attempted_at": outcome.attempted_at,
                        "duration_ms": outcome.duration_ms,
                        "status_code": outcome.status_code,
                        "error": outcome.error,
                    }
                    for item, outcome in batch
                ],
            )
            logged: list[dict[str, Any]] = []  # another claim holds these: only the log moves
            moved: list[dict[str, Any]] = []
            ended: list[tuple[uuid.UUID, bool]] = []  # (subscription, delivered) in attempt order
            for item, outcome in batch:
                row = current[item.delivery_id]
                change = {
                    "b_id": item.delivery_id,
                    "b_attempted_at": outcome.attempted_at,
                    "b_status_code": outcome.status_code,
                    "b_error": outcome.error,
                }
                if row.claim_token != item.claim_token or row.status != "pending":
                    logged.append(change)
                    continue
                change |= {"b_status": "pending", "b_delivered_at": None, "b_retries_used": row.retries_used}
                if outcome.delivered:
                    change |= {"b_status": "delivered", "b_delivered_at": now, "b_next_attempt_at": None}
                    ended.append((item.subscription_id, True))
                elif row.retries_used < len(self.schedule):
                    delay = self.schedule[row.retries_used]
                    change |= {
                        "b_next_attempt_at": now + timedelta(seconds=delay),
                        "b_retries_used": row.retries_used + 1,
                    }
                else:
                    change |= {"b_status": "failed", "b_next_attempt_at": None}
                    ended.append((item.subscription_id, False))
                    WEBHOOK_DELIVERIES_FAILED.inc()
                moved.append(change)
            attempt_logged = {
                "attempts": deliveries.c.attempts + 1,
                "last_attempt_at": sa.bindparam("b_attempted_at"),
                "last_status_code": sa.bindparam("b_status_code"),
                "last_error": sa.bindparam("b_error"),
            }
            by_id = deliveries.c.id == sa.bindparam("b_id")
            if logged:
                await session.execute(sa.update(deliveries).where(by_id).values(**attempt_logged), logged)
            if moved:
                await session.execute(
                    sa.update(deliveries)
                    .where(by_id)
                    .values(
                        **attempt_logged,
                        claim_token=None,
                        status=sa.bindparam("b_status"),
                        delivered_at=sa.bindparam("b_delivered_at"),
                        next_attempt_at=sa.bindparam("b_next_attempt_at"),
                        retries_used=sa.bindparam("b_retries_used"),
                    ),
                    moved,
                )
            await self._count_in_a_row(session, ended, now)
        if any(change["b_status"] == "pending" for change in moved):
            self.wake.set()  # a retry may be due before the next poll

    async def _count_in_a_row(self, session: Any, ended: list[tuple[uuid.UUID, bool]], now: datetime) -> None:
        """Each subscription's finished deliveries, in order: a success resets its count of
        failures in a row, a failure adds one (and may disable it)."""
        for subscription_id in dict.fromkeys(sid for sid, _delivered in ended):
            results = [delivered for sid, delivered in ended if sid == subscription_id]
            last_success = max((n for n, delivered in enumerate(results) if delivered), default=-1)
            if last_success >= 0:
                await self._succeeded(session, subscription_id)
            for _failure in results[last_success + 1 :]:
                await self._failed(session, subscription_id, now)

    async def _succeeded(self, session: Any, subscription_id: uuid.UUID) -> None:
        await session.execute(
            sa.update(subscriptions)
            # (a healthy subscription's row is left alone, not rewritten after every batch)
            .where(
                subscriptions.c.id == subscription_id,
                sa.or_(subscriptions.c.consecutive_failures != 0, ~subscriptions.c.active),
            )
            .values(consecutive_failures=0, active=True, disabled_at=None, disabled_reason=None)
        )
        self._disabled_here.discard(subscription_id)

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
        self._disabled_here.add(subscription_id)  # its held deliveries failed with it: skip them
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
