"""Scrape-time readings of the kit's shared state: the outbox backlog, consumer lag, dead letters.

Each is a :data:`shared.metrics.Refresher`: the process's ``/metrics`` runs it when
Prometheus scrapes, so a value is as fresh as the scrape and costs nothing between scrapes.
They read the database and NATS, so any replica (any worker) gives the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from shared.db import Database, utcnow
from shared.inbox import EventConsumer, dead_letters_table
from shared.metrics import (
    CONSUMER_ACK_PENDING,
    CONSUMER_LAG,
    DEAD_LETTERS_WAITING,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    Refresher,
)
from shared.nats import NatsLink
from shared.outbox import outbox_table


def outbox_backlog(database: Database) -> Refresher:
    """How many committed events wait for NATS, and for how long the oldest has waited."""
    query = sa.select(sa.func.count(), sa.func.min(outbox_table.c.created_at)).where(
        outbox_table.c.sent_at.is_(None)
    )

    async def refresh() -> None:
        async with database.transaction(write=False) as session:
            count, oldest = (await session.execute(query)).one()
        OUTBOX_BACKLOG.set(count or 0)
        OUTBOX_OLDEST_AGE.set(max(0.0, (utcnow() - oldest).total_seconds()) if oldest else 0.0)

    return refresh


def consumer_lag(link: NatsLink, consumers: Sequence[EventConsumer]) -> Refresher:
    """Pending and unacked messages of each durable consumer, as the NATS server counts them."""

    async def refresh() -> None:
        if not link.connected:
            return  # the last values stay; NATS being down shows in /readyz
        for consumer in consumers:
            spec = consumer.spec
            try:
                info = await link.js.consumer_info(spec.stream, spec.durable, timeout=1.0)
            except Exception:  # noqa: S112 - not created yet (its stream missing): nothing to report
                continue
            CONSUMER_LAG.labels(spec.durable).set(info.num_pending or 0)
            CONSUMER_ACK_PENDING.labels(spec.durable).set(info.num_ack_pending or 0)

    return refresh


def dead_letters_waiting(database: Database, consumers: Sequence[str]) -> Refresher:
    """Dead-lettered events not replayed yet, per consumer (0 for a consumer with none)."""
    table = dead_letters_table
    query = (
        sa.select(table.c.consumer, sa.func.count())
        .where(table.c.replayed_at.is_(None))
        .group_by(table.c.consumer)
    )

    async def refresh() -> None:
        async with database.transaction(write=False) as session:
            counts: dict[str, int] = dict((await session.execute(query)).tuples().all())
        for name in {*consumers, *counts}:
            DEAD_LETTERS_WAITING.labels(name).set(counts.get(name, 0))

    return refresh
