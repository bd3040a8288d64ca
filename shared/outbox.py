"""The transactional outbox.

``add(session, event)`` writes the event in the caller's transaction. The relay
publishes committed rows to JetStream with ``Nats-Msg-Id`` = event id, waits for
the ack and marks them sent. It wakes right after a commit that wrote events,
sweeps periodically, and backs off while NATS is down. With several replicas on
PostgreSQL each batch is claimed with ``FOR UPDATE SKIP LOCKED``; anything
published twice (a crash between ack and mark) is dropped by JetStream's
duplicate window and, past it, by the consumers' inbox.

Past the window JetStream would store a second copy, so before publishing a row old enough
that an earlier attempt may have left the window (its ack lost with the connection), the
relay looks for the row's id in the stream and marks it sent if it is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from nats.errors import NoRespondersError
from nats.js.errors import NoStreamResponseError
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared import tracing
from shared.db import KIT_METADATA, BigIntegerKey, Database, UtcDateTime, utcnow
from shared.events import CONTENT_TYPE, CloudEvent
from shared.metrics import OUTBOX_PUBLISHED
from shared.nats import NatsLink, stored_message_ids
from shared.tasks import cancel_requested, stop_task

log = logging.getLogger("seedbed.outbox")

outbox_table = sa.Table(
    "outbox",
    KIT_METADATA,
    sa.Column("position", BigIntegerKey, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("sent_at", UtcDateTime, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
    # The W3C trace context the event was recorded in, so that its publish joins that trace.
    sa.Column("trace_context", sa.String(512), nullable=True),
)
sa.Index(
    "ix_outbox_unsent",
    outbox_table.c.position,
    sqlite_where=outbox_table.c.sent_at.is_(None),
    postgresql_where=outbox_table.c.sent_at.is_(None),
)
sa.Index("ix_outbox_sent_at", outbox_table.c.sent_at)

PENDING_KEY = "outbox_pending"
TAINTED_KEY = "outbox_tainted"
HANDOFF_LIMIT = 10_000
MARK_BATCH = 500
MARK_DELAY_SECONDS = 0.05
# Stream timestamps come from the NATS server's clock, created_at from this process's.
CLOCK_SKEW_ALLOWANCE = timedelta(seconds=60)


class OutboxHandoff:
    """Events committed in this process, handed to the relay so it can publish them at once.

    The database stays the truth: the hand-off only saves the relay a query, and
    anything it cannot vouch for (a savepoint rolled back, an overflow) makes the
    relay sweep the table instead.
    """

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.events: list[dict[str, Any]] = []
        self.sweep_needed = True  # sweep at start: rows may be left from before

    def committed(self, rows: list[dict[str, Any]] | None) -> None:
        if rows is None or len(self.events) + len(rows) > HANDOFF_LIMIT:
            self.sweep_needed = True
        else:
            self.events.extend(rows)
        self.wake.set()

    def take(self, limit: int) -> list[dict[str, Any]]:
        batch, self.events = self.events[:limit], self.events[limit:]
        return batch


def handoff(database: Database) -> OutboxHandoff:
    """The hand-off of a database (one per Database object)."""
    found = database.extensions.get("outbox")
    if found is None:
        found = database.extensions["outbox"] = OutboxHandoff()
    return found


_INSERT = sa.insert(outbox_table)
_MARK_SENT = (
    sa.update(outbox_table)
    .where(outbox_table.c.id.in_(sa.bindparam("ids", expanding=True)), outbox_table.c.sent_at.is_(None))
    .values(sent_at=sa.bindparam("sent_at"))
)


def _row(event: CloudEvent, now: datetime) -> dict[str, Any]:
    return {
        "id": event.id,
        "subject": event.type,
        "body": event.to_bytes(),
        "created_at": now,
        "trace_context": tracing.stored_context(),
    }


async def add(session: AsyncSession, event: CloudEvent) -> None:
    """Record ``event`` in the caller's transaction; it is published after the commit."""
    row = _row(event, utcnow())
    await session.execute(_INSERT, row)
    _pending(session, [row])


async def add_many(session: AsyncSession, events: Iterable[CloudEvent]) -> int:
    """Record several events in one statement (bulk imports)."""
    now = utcnow()
    rows = [_row(e, now) for e in events]
    if rows:
        await session.execute(_INSERT, rows)
        _pending(session, rows)
    return len(rows)


def _pending(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Keep the rows to hand to the relay at the commit, up to what the hand-off takes; past
    that the relay sweeps the table anyway, so a large import keeps no event bodies in memory."""
    if session.info.get(TAINTED_KEY):
        return
    pending = session.info.setdefault(PENDING_KEY, [])
    pending.extend(rows)
    if len(pending) > HANDOFF_LIMIT:
        session.info[PENDING_KEY] = pending[:1]  # still says that the commit wrote events
        session.info[TAINTED_KEY] = True


@sa_event.listens_for(Session, "after_commit")
def _hand_off_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # SQLAlchemy fires this for a released savepoint too: nothing is committed yet
    rows = session.info.pop(PENDING_KEY, None)
    tainted = session.info.pop(TAINTED_KEY, False)
    database = session.info.get("database")
    if rows and isinstance(database, Database):
        handoff(database).committed(None if tainted else rows)


@sa_event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous: Any) -> None:
    if not previous.nested:
        session.info.pop(PENDING_KEY, None)
        session.info.pop(TAINTED_KEY, None)
    elif session.info.get(PENDING_KEY):
        # Events recorded before the rolled-back savepoint may be gone; after the commit
        # the relay reads the table instead of trusting the hand-off.
        session.info[TAINTED_KEY] = True


async def _settled(future: asyncio.Future[Any]) -> None:
    """Wait for ``future`` without raising what it holds (the caller reads it): its error, or
    its cancellation by someone else (the NATS client closing); this task's own cancellation
    (stopping, or a timeout) still goes through."""
    try:
        await future
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
    except Exception:  # noqa: S110 - read from the future by the caller
        pass


class OutboxRelay:
    """Publishes a service's committed outbox rows to JetStream."""

    def __init__(
        self,
        database: Database,
        link: NatsLink,
        *,
        batch_size: int = 500,
        sweep_seconds: float = 1.0,
        publish_timeout: float = 5.0,
        retention: timedelta = timedelta(days=7),
        max_backoff: float = 5.0,
        duplicate_window: float = 300.0,
    ) -> None:
        self.database = database
        self.link = link
        self.batch_size = batch_size
        self.sweep_seconds = sweep_seconds
        self.publish_timeout = publish_timeout
        self.retention = retention
        self.max_backoff = max_backoff
        self.duplicate_window = duplicate_window
        self.found_in_stream_total = 0  # rows found already stored, marked sent unpublished
        self.handoff = handoff(database)
        self.published_total = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._marker: asyncio.Task[None] | None = None
        self._acked: list[str] = []  # published from the hand-off, not yet marked sent
        self._acked_wake = asyncio.Event()
        self._stopping = False
        self._last_purge = 0.0

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        self._marker = asyncio.create_task(self._mark_acked(), name="outbox-marker")

    async def stop(self) -> None:
        await stop_task(self._task)
        # The marker is told to end rather than cancelled: a SQLite write cancelled mid-way can
        # leave its transaction open, and the next writer then waits out the busy timeout.
        self._stopping = True
        self._acked_wake.set()
        if self._marker is not None:
            await asyncio.wait({self._marker}, timeout=5)
        await stop_task(self._marker)
        self._task = self._marker = None
        with contextlib.suppress(Exception):
            await self._flush_acked()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        handoff = self.handoff
        backoff = 0.0
        next_sweep = 0.0
        while not cancel_requested():
            await self.link.wait_ready()
            handoff.wake.clear()
            try:
                while handoff.events and not handoff.sweep_needed:
                    await self._relay_known(handoff.take(self.batch_size))
                if handoff.sweep_needed or loop.time() >= next_sweep:
                    handoff.sweep_needed = False
                    handoff.events.clear()  # the sweep reads them from the table
                    await self._flush_acked()  # so the sweep does not publish them again
                    await self.drain()
                    await self._purge_sent_rows()
                    next_sweep = loop.time() + self.sweep_seconds
                backoff = 0.0
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = repr(exc)
                handoff.sweep_needed = True
                backoff = min(max(backoff * 2, 0.05), self.max_backoff)
                log.warning("outbox relay backing off", extra={"error": repr(exc), "backoff_s": backoff})
                if self.link.connected:
                    await asyncio.sleep(backoff)
                elif await self.link.wait_connected(backoff):
                    backoff = 0.0  # back: publish now rather than at the end of the backoff
                continue
            if not handoff.wake.is_set():
                # (asyncio.timeout, not wait_for: no task of its own for every wait)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(next_sweep):
                        await handoff.wake.wait()

    async def _relay_known(self, rows: list[dict[str, Any]]) -> None:
        """Publish rows this process just committed, without reading them back.

        Marking them sent is left to the marker task, so the next commit's events
        do not wait behind this batch's UPDATE.
        """
        cutoff = self._window_cutoff()
        if any(row["created_at"] <= cutoff for row in rows):
            self.handoff.sweep_needed = True  # the sweep checks the stream for those
            rows = [row for row in rows if row["created_at"] > cutoff]
        outcome = await self._publish(
            [(row["id"], row["subject"], row["body"], row.get("trace_context")) for row in rows]
        )
        sent = [row["id"] for row, error in zip(rows, outcome, strict=True) if error is None]
        if sent:
            self._acked.extend(sent)
            self._acked_wake.set()
            self.published_total += len(sent)
            OUTBOX_PUBLISHED.inc(len(sent))
        if len(sent) < len(rows):
            self.handoff.sweep_needed = True  # the sweep retries them, counting attempts

    async def _mark_acked(self) -> None:
        while not (cancel_requested() or self._stopping):
            await self._acked_wake.wait()
            if len(self._acked) < MARK_BATCH and not self._stopping:
                await asyncio.sleep(MARK_DELAY_SECONDS)  # gather more ids into one UPDATE
            self._acked_wake.clear()
            try:
                await self._flush_acked()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Left unmarked, they are published again by a sweep and dropped as duplicates.
                log.warning("could not mark outbox rows sent", extra={"error": repr(exc)})
                self.handoff.sweep_needed = True

    async def _flush_acked(self) -> None:
        ids, self._acked = self._acked, []
        for start in range(0, len(ids), 1000):
            async with self.database.transaction() as session:
                await session.execute(_MARK_SENT, {"ids": ids[start : start + 1000], "sent_at": utcnow()})

    async def drain(self) -> int:
        """Publish every unsent row in the table now; returns how many were published.

        Raises when a batch could not be published at all (NATS down), so the caller
        backs off. A batch that partly failed (a row without a stream) stops this drain
        without raising: the rest flows and the failed rows are retried at the next sweep.
        """
        total = 0
        while True:
            published, claimed = await self._relay_batch()
            total += published
            if claimed < self.batch_size or published < claimed:
                return total

    async def _relay_batch(self) -> tuple[int, int]:
        claim = (
            sa.select(
                outbox_table.c.position,
                outbox_table.c.id,
                outbox_table.c.subject,
                outbox_table.c.body,
                outbox_table.c.trace_context,
                outbox_table.c.created_at,
            )
            .where(outbox_table.c.sent_at.is_(None))
            .order_by(outbox_table.c.position)
            .limit(self.batch_size)
        )
        if self.database.is_sqlite:
            # No row locks on SQLite: read without holding the write lock while publishing.
            async with self.database.transaction(write=False) as session:
                rows = (await session.execute(claim)).all()
            if not rows:
                return 0, 0
            outcome = await self._publish_rows(rows)
            async with self.database.transaction() as session:
                await self._record(session, rows, outcome)
        else:
            async with self.database.transaction() as session:
                rows = (await session.execute(claim.with_for_update(skip_locked=True))).all()
                if not rows:
                    return 0, 0
                outcome = await self._publish_rows(rows)
                await self._record(session, rows, outcome)
        published = sum(1 for error in outcome if error is None)
        self.published_total += published
        OUTBOX_PUBLISHED.inc(published)
        failures = [error for error in outcome if error is not None]
        if failures:
            if not published:
                raise ConnectionError(f"{len(failures)} of {len(rows)} events not acked: {failures[0]}")
            self.last_error = failures[0]
            log.warning(
                "outbox events not acked, retrying at the next sweep",
                extra={"failed": len(failures), "batch": len(rows), "error": failures[0]},
            )
        return published, len(rows)

    def _window_cutoff(self) -> datetime:
        """Rows created at or before this may have a copy stored longer ago than the duplicate
        window by the time a new copy is stored (a publish may take ``publish_timeout``)."""
        return utcnow() - timedelta(seconds=max(self.duplicate_window - self.publish_timeout - 1.0, 0.0))

    async def _publish_rows(self, rows: Sequence[Any]) -> list[str | None]:
        """Publish claimed rows, except those the stream already holds (None: sent)."""
        cutoff = self._window_cutoff()
        old = {row.id: row.created_at for row in rows if row.created_at <= cutoff}
        stored: set[str] = set()
        if old:
            since = min(old.values()).astimezone(UTC) - CLOCK_SKEW_ALLOWANCE
            for spec in self.link.streams:
                stored |= await stored_message_ids(self.link.js, spec.name, since, set(old) - stored)
            if stored:
                self.found_in_stream_total += len(stored)
                log.info(
                    "outbox rows already in the stream, marked sent without publishing again",
                    extra={"rows": len(stored), "checked": len(old)},
                )
        fresh = [row for row in rows if row.id not in stored]
        published = iter(
            await self._publish([(row.id, row.subject, row.body, row.trace_context) for row in fresh])
        )
        return [None if row.id in stored else next(published) for row in rows]

    async def _publish(self, messages: list[tuple[str, str, bytes, str | None]]) -> list[str | None]:
        """Publish (id, subject, body, trace context) messages and wait for the acks; one error (or
        None) each."""
        if not messages:
            return []
        if not self.link.connected:
            raise ConnectionError("NATS is not connected")
        js = self.link.js
        futures: list[asyncio.Future[Any]] = []
        for event_id, subject, body, trace_context in messages:
            headers = {"Nats-Msg-Id": event_id, "Content-Type": CONTENT_TYPE}
            with tracing.publishing(subject, event_id, trace_context, headers):
                futures.append(await js.publish_async(subject, body, headers=headers))
        # The acks come back in order: awaiting each in order waits as long as for them all.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.publish_timeout):
                for future in futures:
                    if not future.done():
                        await _settled(future)
        outcome: list[str | None] = []
        missing_stream = False
        for future in futures:
            if not future.done() or future.cancelled():
                future.cancel()
                outcome.append("no ack before timeout")
            elif (exc := future.exception()) is not None:
                missing_stream |= isinstance(exc, NoRespondersError | NoStreamResponseError)
                outcome.append(repr(exc))
            else:
                outcome.append(None)
        if missing_stream:
            with contextlib.suppress(Exception):
                await self.link.ensure_streams()
        return outcome

    async def _record(self, session: AsyncSession, rows: Sequence[Any], outcome: list[str | None]) -> None:
        sent = [row.position for row, error in zip(rows, outcome, strict=True) if error is None]
        if sent:
            await session.execute(
                sa.update(outbox_table).where(outbox_table.c.position.in_(sent)).values(sent_at=utcnow())
            )
        failed = [
            (row.position, error) for row, error in zip(rows, outcome, strict=True) if error is not None
        ]
        if failed:
            await session.execute(
                sa.update(outbox_table)
                .where(outbox_table.c.position.in_([position for position, _ in failed]))
                .values(attempts=outbox_table.c.attempts + 1, last_error=failed[0][1][:500])
            )

    async def _purge_sent_rows(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._last_purge < 600:
            return
        self._last_purge = loop_time
        async with self.database.transaction() as session:
            await session.execute(
                sa.delete(outbox_table).where(outbox_table.c.sent_at < utcnow() - self.retention)
            )

    async def check(self) -> None:
        """Raise while the relay cannot publish (readiness reports it as degraded)."""
        if self.last_error is not None:
            raise ConnectionError(f"events wait in the outbox: {self.last_error}")

    async def backlog(self) -> int:
        async with self.database.transaction(write=False) as session:
            count = await session.scalar(
                sa.select(sa.func.count()).select_from(outbox_table).where(outbox_table.c.sent_at.is_(None))
            )
        return int(count or 0)
