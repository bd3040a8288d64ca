"""The idempotent consumer: durable pull consumers with an inbox and dead letters.

The handler's changes and the inbox row (event id, consumer) commit together;
the message is acked only after that commit, so a redelivery finds the inbox
row and is acked without running the handler again. Transient failures are
``nak``-ed with a growing delay; after ``max_deliver`` attempts, or at once for
a :class:`PermanentEventError`, the message becomes a dead-letter row and is
``term``-ed, and the messages behind it keep flowing. JetStream itself never gives
up on a message (its own ``max_deliver`` is unlimited): a message leaves the stream's
care only acked (applied, or a duplicate) or termed (recorded as a dead letter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from shared import tracing
from shared.db import KIT_METADATA, BigIntegerKey, Database, UtcDateTime, utcnow
from shared.events import CloudEvent
from shared.metrics import CONSUMER_DEAD_LETTERS, CONSUMER_PROCESSED, CONSUMER_REDELIVERIES
from shared.nats import NatsLink
from shared.tasks import cancel_requested, stop_task

log = logging.getLogger("seedbed.inbox")

STOP_PATIENCE_SECONDS = 10.0  # for the batch being applied when a consumer is told to stop

inbox_table = sa.Table(
    "inbox",
    KIT_METADATA,
    sa.Column("consumer", sa.String(100), primary_key=True),
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("event_type", sa.String(255), nullable=False),
    sa.Column("processed_at", UtcDateTime, nullable=False),
)

dead_letters_table = sa.Table(
    "dead_letters",
    KIT_METADATA,
    sa.Column("id", BigIntegerKey, primary_key=True, autoincrement=True),
    sa.Column("consumer", sa.String(100), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=True),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("deliveries", sa.Integer, nullable=False),
    sa.Column("stream_sequence", sa.BigInteger, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # Set when staff replayed it through its consumer (the row stays, as the record of it).
    sa.Column("replayed_at", UtcDateTime, nullable=True),
)
sa.Index(
    "ix_dead_letters_consumer_created_at",
    dead_letters_table.c.consumer,
    dead_letters_table.c.created_at,
)

EventHandler = Callable[[AsyncSession, CloudEvent], Awaitable[None]]


class PermanentEventError(Exception):
    """The event can never be handled (bad payload): dead-letter it without retrying."""


class ReplayFailed(Exception):
    """A replayed dead letter failed again; the message is the error now recorded with it."""


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer on another (or the same) service's stream."""

    durable: str
    stream: str
    subjects: Sequence[str]
    handler: EventHandler
    max_deliver: int = 5
    ack_wait_seconds: float = 30.0
    nak_delays: Sequence[float] = field(default=(0.5, 2.0, 5.0, 15.0, 30.0))
    batch: int = 64
    fetch_timeout: float = 1.0


class EventConsumer:
    """Runs one :class:`ConsumerSpec` against a service's database."""

    def __init__(self, database: Database, link: NatsLink, spec: ConsumerSpec) -> None:
        self.database = database
        self.link = link
        self.spec = spec
        self.processed_total = 0
        self.duplicates_total = 0
        self.dead_lettered_total = 0
        self._processed = CONSUMER_PROCESSED.labels(spec.durable)
        self._redelivered = CONSUMER_REDELIVERIES.labels(spec.durable)
        self._dead_lettered = CONSUMER_DEAD_LETTERS.labels(spec.durable)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._applying = False

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.spec.durable}")

    async def stop(self) -> None:
        # A batch being applied is let finish, not cancelled: a SQLite write cancelled mid-way
        # can leave its transaction open, and the next writer then waits out the busy timeout.
        self._stopping = True
        if self._task is not None:
            if not self._applying:
                self._task.cancel()  # waiting for messages: nothing to cut short
            await asyncio.wait({self._task}, timeout=STOP_PATIENCE_SECONDS)
        await stop_task(self._task)
        self._task = None

    def _config(self) -> ConsumerConfig:
        subjects = list(self.spec.subjects)
        return ConsumerConfig(
            durable_name=self.spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            # Unlimited: past its own max_deliver JetStream would drop a message silently, say
            # one whose batch failed to commit while the database was away.
            max_deliver=-1,
            ack_wait=self.spec.ack_wait_seconds,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,
            max_ack_pending=1000,
        )

    async def _subscribe(self) -> object:
        js = self.link.js
        await js.add_consumer(self.spec.stream, self._config())
        return await js.pull_subscribe_bind(durable=self.spec.durable, stream=self.spec.stream)

    async def _run(self) -> None:
        subscription = None
        backoff = 0.0
        while not (self._stopping or cancel_requested()):
            await self.link.wait_ready()
            try:
                if subscription is None:
                    subscription = await self._subscribe()
                messages = await subscription.fetch(self.spec.batch, timeout=self.spec.fetch_timeout)  # type: ignore[attr-defined]
                backoff = 0.0
            except (NatsTimeoutError, TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Stream not created yet, consumer deleted, or NATS down: try again later.
                backoff = min(max(backoff * 2, 0.1), 5.0)
                log.info(
                    "consumer waiting",
                    extra={"consumer": self.spec.durable, "error": repr(exc), "backoff_s": backoff},
                )
                if subscription is not None and not self.link.connected:
                    subscription = None
                await asyncio.sleep(backoff)
                continue
            if self._stopping or cancel_requested():
                return  # unacked messages are redelivered to whoever runs next
            self._applying = True
            try:
                await self.process(messages)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database failed while recording the outcome: let NATS redeliver.
                log.warning("consumer failed", extra={"consumer": self.spec.durable, "error": repr(exc)})
                for message in messages:
                    with contextlib.suppress(Exception):
                        await message.nak(delay=self.spec.nak_delays[0])
            finally:
                self._applying = False

    async def process(self, messages: Sequence[Msg]) -> None:
        """Apply a fetched batch, each event exactly once, in one transaction (a backlog costs
        one commit per batch, not per event), each event in a savepoint so that one that fails
        leaves the others applied; then ack the applied ones and retry or dead-letter the rest.
        A batch that fails as a whole (its commit, say) is applied again one event at a time,
        so that an event that cannot commit holds back only itself."""
        events: list[tuple[Msg, CloudEvent]] = []
        for message in messages:
            if _deliveries(message) > 1:
                self._redelivered.inc()
            try:
                events.append((message, CloudEvent.from_bytes(message.data)))
            except ValidationError as exc:
                await self._dead_letter(message, None, f"malformed CloudEvent: {exc}", _deliveries(message))
        if len(events) > 1:
            try:
                await self._apply(events)
                return
            except Exception as exc:
                log.warning(
                    "consumer batch failed, applying its events one at a time",
                    extra={"consumer": self.spec.durable, "events": len(events), "error": repr(exc)},
                )
        for message, event in events:
            try:
                await self._apply([(message, event)])
            except Exception as exc:
                await self._retry_or_dead_letter(message, event, exc)

    async def _apply(self, events: Sequence[tuple[Msg, CloudEvent]]) -> None:
        """One transaction for ``events``; then acks, and retries or dead letters for those
        whose handler failed. Safe to run again: the inbox turns what committed into no-ops."""
        async with self.database.transaction() as session:
            applied, failures = await self._apply_in(
                session, [(message.subject, message.headers, event) for message, event in events]
            )
        self.processed_total += len(applied)
        self._processed.inc(len(applied))
        for index, error in failures:
            await self._retry_or_dead_letter(*events[index], error)
        retried = {index for index, _error in failures}
        for index, (message, _event) in enumerate(events):
            if index not in retried:
                with contextlib.suppress(Exception):
                    # A lost ack means a redelivery, which the inbox row turns into a no-op.
                    await message.ack()

    async def _retry_or_dead_letter(self, message: Msg, event: CloudEvent, exc: Exception) -> None:
        deliveries = _deliveries(message)
        permanent = isinstance(exc, PermanentEventError | ValidationError)
        if permanent or deliveries >= self.spec.max_deliver:
            log.error(
                "event dead-lettered",
                extra={"consumer": self.spec.durable, "event_id": event.id, "error": repr(exc)},
            )
            await self._dead_letter(message, event.id, repr(exc), deliveries)
            return
        delays = self.spec.nak_delays
        delay = delays[min(deliveries - 1, len(delays) - 1)]
        log.warning(
            "event handling failed, will retry",
            extra={"consumer": self.spec.durable, "event_id": event.id, "error": repr(exc), "delay_s": delay},
        )
        with contextlib.suppress(Exception):
            await message.nak(delay=delay)

    async def _apply_in(
        self, session: AsyncSession, received: Sequence[tuple[str, Mapping[str, str] | None, CloudEvent]]
    ) -> tuple[list[CloudEvent], list[tuple[int, Exception]]]:
        """Each event not in the inbox through the handler, in its own savepoint of ``session``'s
        transaction, then the inbox rows of those applied. Returns them, and the position and
        error of each that failed (undone alone)."""
        done = set(
            await session.scalars(
                sa.select(inbox_table.c.event_id).where(
                    inbox_table.c.consumer == self.spec.durable,
                    inbox_table.c.event_id.in_([event.id for _subject, _headers, event in received]),
                )
            )
        )
        applied: list[CloudEvent] = []
        failed: list[tuple[int, Exception]] = []
        for index, (subject, headers, event) in enumerate(received):
            if event.id in done:
                self.duplicates_total += 1
                continue
            try:
                with tracing.consuming(subject, headers, self.spec.durable, event.id):
                    async with session.begin_nested():
                        await self.spec.handler(session, event)
            except Exception as exc:
                failed.append((index, exc))
                continue
            done.add(event.id)
            applied.append(event)
        if applied:
            now = utcnow()
            await session.execute(
                sa.insert(inbox_table),
                [
                    {
                        "consumer": self.spec.durable,
                        "event_id": event.id,
                        "event_type": event.type,
                        "processed_at": now,
                    }
                    for event in applied
                ],
            )
        return applied, failed

    async def replay(self, dead_letter_id: int) -> bool:
        """Run a dead-lettered event of this consumer through its handler now, as a delivery
        would: with the inbox check, the handler's changes, the inbox row and the dead letter
        marked replayed in one transaction. True if applied, False if the inbox had it already.
        Raises :class:`ReplayFailed` (the dead letter keeps the new error) when it fails again."""
        table = dead_letters_table
        async with self.database.transaction(write=False) as session:
            row = (
                await session.execute(
                    sa.select(table.c.subject, table.c.body).where(
                        table.c.id == dead_letter_id, table.c.consumer == self.spec.durable
                    )
                )
            ).one_or_none()
        if row is None:
            raise LookupError(dead_letter_id)
        try:
            event = CloudEvent.from_bytes(row.body)
            async with self.database.transaction() as session:
                applied, failed = await self._apply_in(session, [(row.subject, None, event)])
                if failed:
                    raise failed[0][1]
                await session.execute(
                    sa.update(table).where(table.c.id == dead_letter_id).values(replayed_at=utcnow())
                )
        except Exception as exc:
            error = f"replay: {exc!r}"[:4000]
            async with self.database.transaction() as session:
                await session.execute(
                    sa.update(table).where(table.c.id == dead_letter_id).values(error=error)
                )
            raise ReplayFailed(error) from exc
        self.processed_total += len(applied)
        self._processed.inc(len(applied))
        return bool(applied)

    async def _dead_letter(self, message: Msg, event_id: str | None, error: str, deliveries: int) -> None:
        async with self.database.transaction() as session:
            await session.execute(
                sa.insert(dead_letters_table).values(
                    consumer=self.spec.durable,
                    event_id=event_id,
                    subject=message.subject,
                    body=message.data,
                    error=error[:4000],
                    deliveries=deliveries,
                    stream_sequence=message.metadata.sequence.stream,
                    created_at=utcnow(),
                )
            )
        self.dead_lettered_total += 1
        self._dead_lettered.inc()
        with contextlib.suppress(Exception):
            await message.term()


def _deliveries(message: Msg) -> int:
    return message.metadata.num_delivered or 1
