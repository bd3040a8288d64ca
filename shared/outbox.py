"""The transactional outbox.

``add(session, event)`` writes the event in the caller's transaction. The relay
publishes committed rows to JetStream with ``Nats-Msg-Id`` = event id, waits for
the ack and marks them sent. It wakes right after a commit that wrote events,
sweeps periodically, and backs off while NATS is down. With several replicas on
PostgreSQL each batch is claimed with ``FOR UPDATE SKIP LOCKED``; anything
published twice (a crash between ack and mark) is dropped by JetStream's
duplicate window and, past it, by the consumers' inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from nats.errors import NoRespondersError
from nats.js.errors import NoStreamResponseError
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.db import KIT_METADATA, BigIntegerKey, Database, UtcDateTime, utcnow
from shared.events import CONTENT_TYPE, CloudEvent
from shared.nats import NatsLink

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
)
sa.Index(
    "ix_outbox_unsent",
    outbox_table.c.position,
    sqlite_where=outbox_table.c.sent_at.is_(None),
    postgresql_where=outbox_table.c.sent_at.is_(None),
)
sa.Index("ix_outbox_sent_at", outbox_table.c.sent_at)

PENDING_KEY = "outbox_pending"


async def add(session: AsyncSession, event: CloudEvent) -> None:
    """Record ``event`` in the caller's transaction; it is published after the commit."""
    await add_many(session, [event])


async def add_many(session: AsyncSession, events: Iterable[CloudEvent]) -> int:
    """Record several events in one statement (bulk imports)."""
    now = utcnow()
    rows = [{"id": e.id, "subject": e.type, "body": e.to_bytes(), "created_at": now} for e in events]
    if rows:
        await session.execute(sa.insert(outbox_table), rows)
        session.info[PENDING_KEY] = True
    return len(rows)


@sa_event.listens_for(Session, "after_commit")
def _wake_relay_after_commit(session: Session) -> None:
    if session.info.pop(PENDING_KEY, False):
        signal = session.info.get("outbox_signal")
        if signal is not None:
            signal.set()


@sa_event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)


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
    ) -> None:
        self.database = database
        self.link = link
        self.batch_size = batch_size
        self.sweep_seconds = sweep_seconds
        self.publish_timeout = publish_timeout
        self.retention = retention
        self.max_backoff = max_backoff
        self.published_total = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        signal = self.database.outbox_signal
        backoff = 0.0
        while True:
            await self.link.wait_ready()
            signal.clear()
            try:
                await self.drain()
                await self._purge_sent_rows()
                backoff = 0.0
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = repr(exc)
                backoff = min(max(backoff * 2, 0.05), self.max_backoff)
                log.warning("outbox relay backing off", extra={"error": repr(exc), "backoff_s": backoff})
                await asyncio.sleep(backoff)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), self.sweep_seconds)

    async def drain(self) -> int:
        """Publish every unsent row now; returns how many were published."""
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
            outcome = await self._publish(rows)
            async with self.database.transaction() as session:
                await self._record(session, rows, outcome)
        else:
            async with self.database.transaction() as session:
                rows = (await session.execute(claim.with_for_update(skip_locked=True))).all()
                if not rows:
                    return 0, 0
                outcome = await self._publish(rows)
                await self._record(session, rows, outcome)
        published = sum(1 for error in outcome if error is None)
        self.published_total += published
        failures = [error for error in outcome if error is not None]
        if failures:
            raise ConnectionError(f"{len(failures)} of {len(rows)} events not acked: {failures[0]}")
        return published, len(rows)

    async def _publish(self, rows: list[Any]) -> list[str | None]:
        """Publish a batch and wait for the acks; one error (or None) per row."""
        if not self.link.connected:
            raise ConnectionError("NATS is not connected")
        js = self.link.js
        futures: list[asyncio.Future[Any]] = []
        for row in rows:
            futures.append(
                await js.publish_async(
                    row.subject,
                    row.body,
                    headers={"Nats-Msg-Id": row.id, "Content-Type": CONTENT_TYPE},
                )
            )
        _done, pending = await asyncio.wait(futures, timeout=self.publish_timeout)
        for future in pending:
            future.cancel()
        outcome: list[str | None] = []
        missing_stream = False
        for future in futures:
            if future in pending:
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

    async def _record(self, session: AsyncSession, rows: list[Any], outcome: list[str | None]) -> None:
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

    async def backlog(self) -> int:
        async with self.database.transaction(write=False) as session:
            count = await session.scalar(
                sa.select(sa.func.count()).select_from(outbox_table).where(outbox_table.c.sent_at.is_(None))
            )
        return int(count or 0)
