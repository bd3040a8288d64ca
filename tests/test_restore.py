"""The restore drill of docs/operations.md, on SQLite and on PostgreSQL, for the demand service
(which both publishes and consumes): write, back up while it runs, write more, stop, restore,
rewind its consumers, start again; then every event of the streams it reads is applied once
(none lost: the ones after the backup were read again; none twice: the inbox skipped the ones
before it, and the matches they made were not announced again), and every event its restored
outbox holds is on its stream."""

from __future__ import annotations

import collections
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from deploy import backup
from services.demand.app import create_app
from services.demand.consumers import CONSUMERS as DEMAND_CONSUMERS
from services.demand.settings import DemandSettings
from shared.db import Database
from shared.events import CONTENT_TYPE, new_event, stream_for
from shared.inbox import inbox_table
from shared.nats import ensure_stream, read_stream
from shared.outbox import outbox_table
from shared.testing.apps import TEST_SECRET, client, running
from shared.testing.databases import DatabaseFactory, alembic_prepare
from shared.testing.nats_server import NatsServer
from shared.testing.polling import wait_until
from tests.conftest import line_body

ROOT = Path(__file__).resolve().parents[1]
CONSUMERS = {
    "demand-enterprises": "ENTERPRISES",
    "demand-catalogue": "ENTERPRISES",
    "demand-matching": "DEMAND",
}

pytestmark = pytest.mark.slow


class Drill:
    def __init__(self, settings: DemandSettings, js: JetStreamContext) -> None:
        self.settings = settings
        self.js = js
        self.database = Database(settings.database_url)

    async def enterprise(self, enterprise_id: str, version: int, name: str) -> None:
        """What the enterprises service would publish about an enterprise (this test plays it)."""
        kind = "registered" if version == 1 else "updated"
        event = new_event(
            f"enterprises.enterprise.{kind}.v1",
            {
                "enterprise_id": enterprise_id,
                "version": version,
                "name": name,
                "stage": "incubating",
                "postcode": "LS6 2QR",
                "cpv_codes": ["55300000"],
                "vcse": True,
                "employees": 4,
                "turnover_pence": 25_000_000,
            },
            source="/seedbed/enterprises",
        )
        headers = {"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE}
        await self.js.publish(event.type, event.to_bytes(), headers=headers)

    async def stream_events(self, stream: str) -> list[dict[str, Any]]:
        everything = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        return [json.loads(message.data) async for message in read_stream(self.js, stream, everything)]

    async def settled(self) -> bool:
        """Nothing waiting to be published, and every consumer has acked all it was sent."""
        async with self.database.transaction(write=False) as session:
            unsent = await session.scalar(
                sa.select(sa.func.count()).select_from(outbox_table).where(outbox_table.c.sent_at.is_(None))
            )
        if unsent:
            return False
        for durable, stream in CONSUMERS.items():
            try:
                info = await self.js.consumer_info(stream, durable)
            except Exception:
                return False
            if info.num_pending or info.num_ack_pending:
                return False
        return True

    async def until_settled(self) -> None:
        await wait_until(self.settled, timeout=60, interval=0.2)


async def test_restore_drill(
    db_backend: str, database_factory: DatabaseFactory, own_nats_server: NatsServer, tmp_path: Path
) -> None:
    url = await database_factory.create(db_backend, "demand", alembic_prepare(ROOT / "services" / "demand"))
    settings = DemandSettings(
        database_url=url,
        nats_url=own_nats_server.url,
        internal_secret=TEST_SECRET,
        environment="test",
        access_log=False,
        pipeline_publisher=False,
    )
    nc = await nats.connect(own_nats_server.url)
    js = nc.jetstream()
    await ensure_stream(js, stream_for("enterprises"))
    drill = Drill(settings, js)
    dump = tmp_path / ("demand.sqlite" if db_backend == "sqlite" else "demand.pgdump")
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    try:
        # 1. Write: two enterprises heard of, two public lines (each announces its matches).
        async with running(create_app(settings)) as app, client(app) as staff:
            anchor = await created(staff, "/anchors", {"name": "Drill University", "type": "university"})
            await drill.enterprise(first, 1, "First Meals CIC")
            await drill.enterprise(second, 1, "Second Meals CIC")
            await drill.until_settled()  # matching needs the enterprises first
            early = await created(staff, "/demand", line_body(anchor["id"], "Drill meals one"))
            await created(staff, "/demand", line_body(anchor["id"], "Drill meals two"))
            await drill.until_settled()

            # 2. Back up while it runs.
            backup.backup(url, dump)

            # 3. Write more: a third enterprise, a change of the first, a line and a change.
            await drill.enterprise(third, 1, "Third Meals CIC")
            await drill.enterprise(first, 2, "First Meals CIC, renamed")
            await drill.until_settled()
            await created(staff, "/demand", line_body(anchor["id"], "Drill meals three"))
            changed = await staff.patch(
                f"/api/v1/demand/{early['id']}",
                json={"title": "Drill meals one, changed"},
                headers={"If-Match": f'"{early["version"]}"'},
            )
            assert changed.status_code == 200, changed.text
            await drill.until_settled()
        announced_before = await matches(drill)
        # Before the backup two lines x two enterprises; after it, a new line and a changed one x three.
        assert len(announced_before) == 2 * 2 + 2 * 3

        # 4. Restore (the service stopped), rewind its consumers, start again.
        await drill.database.dispose()
        backup.restore(url, dump)
        assert sorted(await backup.rewind(own_nats_server.url, "demand")) == [
            "DEMAND:demand-matching",
            "ENTERPRISES:demand-catalogue",
            "ENTERPRISES:demand-enterprises",
        ]
        async with running(create_app(settings)):
            await drill.until_settled()

        # 5. Consistent: each consumer applied every event of its subjects, once.
        for durable, stream in CONSUMERS.items():
            subjects = tuple(subject.replace(">", "") for subject in spec_subjects(durable))
            wanted = {e["id"] for e in await drill.stream_events(stream) if e["type"].startswith(subjects)}
            async with drill.database.transaction(write=False) as session:
                applied = set(
                    (
                        await session.scalars(
                            sa.select(inbox_table.c.event_id).where(inbox_table.c.consumer == durable)
                        )
                    ).all()
                )
            assert applied == wanted, durable
        async with drill.database.transaction(write=False) as session:
            known = dict(
                (await session.execute(sa.text("SELECT enterprise_id, version FROM match_enterprises"))).all()
            )
            outbox_ids = set((await session.scalars(sa.select(outbox_table.c.id))).all())
        # The enterprise events after the backup were caught up on.
        assert known == {first: 2, second: 1, third: 1}
        # No match announced twice: the line events before the backup were not applied again.
        assert await matches(drill) == announced_before
        assert all(count == 1 for count in announced_before.values()), announced_before
        # Everything the restored outbox holds is on the stream.
        assert outbox_ids <= {e["id"] for e in await drill.stream_events("DEMAND")}
    finally:
        await drill.database.dispose()
        await nc.close()


def spec_subjects(durable: str) -> list[str]:
    return list(next(spec for spec in DEMAND_CONSUMERS if spec.durable == durable).subjects)


async def matches(drill: Drill) -> collections.Counter[tuple[str, int, str]]:
    """How many times each (line, version, enterprise) was announced on the stream."""
    return collections.Counter(
        (e["data"]["demand_id"], e["data"]["version"], e["data"]["enterprise_id"])
        for e in await drill.stream_events("DEMAND")
        if e["type"] == "demand.match.found.v1"
    )


async def created(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"/api/v1{path}", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())
