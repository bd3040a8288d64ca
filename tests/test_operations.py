"""What an operator sees and does, on a system of this module's own (NATS is stopped, poison
published): ``/metrics`` of every process scraped with prometheus-client's parser, and dead
letters listed, inspected and replayed through the gateway by staff only."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import nats
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from shared.db import Database
from shared.events import CONTENT_TYPE, new_event
from shared.inbox import dead_letters_table
from shared.testing.databases import DatabaseFactory
from shared.testing.polling import wait_until
from shared.testing.system import System
from tests.conftest import API, boot, created, enterprise_body, line_body

PARTS = ("enterprises", "demand", "mentoring", "gateway")


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, _database_factory_sync: DatabaseFactory
) -> Iterator[System]:
    with boot(tmp_path_factory.mktemp("operations"), _database_factory_sync) as (booted, _clock):
        yield booted


def process_url(system: System, part: str) -> str:
    return system.url if part == "gateway" else system.services[part].url


async def scrape(system: System, part: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a process's /metrics: (name, sorted labels) -> value."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(process_url(system, part) + "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def database_of(system: System, part: str) -> Database:
    return Database(system.services[part].env[f"{part.upper()}_DATABASE_URL"])


# -- metrics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("part", PARTS)
async def test_every_process_serves_metrics_outside_the_api(system: System, part: str) -> None:
    samples = await scrape(system, part)
    assert ("seedbed_db_pool_connections_in_use", ()) in samples
    if part != "gateway":
        assert ("seedbed_outbox_backlog", ()) in samples
    async with system.client() as staff:
        # Not a public route: the gateway does not forward /api/v1/metrics anywhere.
        assert (await staff.get(f"{API}/metrics")).status_code == 404


async def test_requests_are_counted_by_route_template_never_by_raw_path(system: System) -> None:
    name = "seedbed_http_requests_total"
    # Each process labels with its own template (the gateway's route table names it {id}).
    routes = {"gateway": f"{API}/demand/{{id}}", "demand": f"{API}/demand/{{demand_id}}"}
    before = {part: await scrape(system, part) for part in ("gateway", "demand")}
    missing = [str(uuid.uuid4()) for _ in range(3)]
    async with system.client() as staff:
        for line_id in missing:
            assert (await staff.get(f"{API}/demand/{line_id}")).status_code == 404
        assert (await staff.get(f"{API}/no-such-thing/{missing[0]}")).status_code == 404
    after = {part: await scrape(system, part) for part in ("gateway", "demand")}
    for part, route in routes.items():
        counted = value(after[part], name, method="GET", route=route, status="404") - value(
            before[part], name, method="GET", route=route, status="404"
        )
        assert counted == 3, part
        latency = value(
            after[part],
            "seedbed_http_request_duration_seconds_count",
            method="GET",
            route=route,
            status="404",
        )
        assert latency >= 3
        labels = {v for (_n, pairs) in after[part] for _k, v in pairs}
        assert not any(line_id in label for label in labels for line_id in missing), part
    assert value(after["gateway"], name, method="GET", route="unmatched", status="404") >= 1


async def test_the_outbox_backlog_rises_while_nats_is_down_and_drains_after(system: System) -> None:
    tag = uuid.uuid4().hex[:6]
    async with system.client() as staff:
        anchor = await created(staff, "/anchors", {"name": f"Backlog anchor {tag}", "type": "university"})
        system.nats.stop()
        try:
            for n in range(3):
                await created(staff, "/demand", line_body(anchor["id"], f"Backlog meals {n} {tag}"))
            samples = await scrape(system, "demand")
            assert value(samples, "seedbed_outbox_backlog") >= 3
            await asyncio.sleep(1.1)
            assert value(await scrape(system, "demand"), "seedbed_outbox_oldest_unsent_age_seconds") >= 1
        finally:
            system.nats.start()
            await system.nats.wait_jetstream()

    async def drained() -> bool:
        return value(await scrape(system, "demand"), "seedbed_outbox_backlog") == 0

    await wait_until(drained, timeout=30, interval=0.3)
    samples = await scrape(system, "demand")
    assert value(samples, "seedbed_outbox_oldest_unsent_age_seconds") == 0
    assert value(samples, "seedbed_outbox_published_total") >= 3


# -- dead letters -----------------------------------------------------------------------------


async def publish_raw(system: System, subject: str, body: bytes) -> None:
    nc = await nats.connect(system.nats.url)
    try:
        await nc.jetstream().publish(subject, body, headers={"Content-Type": CONTENT_TYPE})
    finally:
        await nc.close()


async def poison_for_demand(system: System) -> str:
    """An enterprise event the demand consumer can never read (no name, no stage): its id."""
    event = new_event(
        "enterprises.enterprise.registered.v1",
        {"enterprise_id": str(uuid.uuid4()), "version": 1},
        source="/seedbed/enterprises",
    )
    await publish_raw(system, event.type, event.to_bytes())
    return event.id


async def dead_letter_of(staff: httpx.AsyncClient, part: str, event_id: str) -> dict:
    async def listed() -> dict | None:
        page = await staff.get(f"{API}/admin/{part}/dead-letters", params={"status": "all"})
        assert page.status_code == 200, page.text
        return next((item for item in page.json()["items"] if item["event_id"] == event_id), None)

    await wait_until(listed, timeout=20, interval=0.2)
    found = await listed()
    assert found is not None
    return found


async def test_a_poison_event_is_dead_lettered_counted_listed_and_inspected(system: System) -> None:
    before = await scrape(system, "demand")
    event_id = await poison_for_demand(system)
    async with system.client() as staff:
        item = await dead_letter_of(staff, "demand", event_id)
        assert item["consumer"] == "demand-enterprises"
        assert item["subject"] == "enterprises.enterprise.registered.v1"
        assert "validation error" in item["error"].lower() and "name" in item["error"]
        assert item["replayed_at"] is None
        detail = await staff.get(f"{API}/admin/demand/dead-letters/{item['id']}")
        assert detail.status_code == 200, detail.text
        assert detail.json()["event"]["id"] == event_id
        assert detail.json()["event"]["data"]["version"] == 1

        # Replayed, it fails the same way: 409, and the dead letter keeps the new error.
        replay = await staff.post(f"{API}/admin/demand/dead-letters/{item['id']}/replay")
        assert replay.status_code == 409, replay.text
        assert replay.json()["type"].endswith("replay-failed")
        again = (await staff.get(f"{API}/admin/demand/dead-letters/{item['id']}")).json()
        assert again["error"].startswith("replay:") and again["replayed_at"] is None
        for part in ("demand", "gateway"):  # an id past the 64-bit column: 422 naming it, not 500
            for path in (f"dead-letters/{2**64}", f"dead-letters/{2**64}/replay"):
                method = staff.post if path.endswith("replay") else staff.get
                refused = await method(f"{API}/admin/{part}/{path}")
                assert refused.status_code == 422, refused.text
                assert [e["field"] for e in refused.json()["errors"]] == ["dead_letter_id"]

    after = await scrape(system, "demand")
    dead = "seedbed_consumer_dead_letters_total"
    assert (
        value(after, dead, consumer="demand-enterprises") - value(before, dead, consumer="demand-enterprises")
        == 1
    )
    assert value(after, "seedbed_dead_letters_waiting", consumer="demand-enterprises") >= 1


async def test_staff_replay_applies_a_dead_letter_once_through_its_consumer(system: System) -> None:
    """A dead letter left by failures that have since passed (here written as the consumer
    writes one): replayed, the read model has the enterprise; replayed again, nothing changes."""
    async with system.client() as staff:
        enterprise = await created(
            staff, "/enterprises", enterprise_body(f"Replay CIC {uuid.uuid4().hex[:6]}")
        )
    later = dict(enterprise_snapshot(enterprise), version=enterprise["version"] + 1, name="Renamed by replay")
    event = new_event("enterprises.enterprise.updated.v1", later, source="/seedbed/enterprises")
    database = database_of(system, "demand")
    try:
        async with database.transaction() as session:
            dead_id = await session.scalar(
                sa.insert(dead_letters_table)
                .values(
                    consumer="demand-enterprises",
                    event_id=event.id,
                    subject=event.type,
                    body=event.to_bytes(),
                    error="ConnectionError('the database blinked')",
                    deliveries=5,
                    stream_sequence=None,
                    created_at=datetime.now(UTC),
                )
                .returning(dead_letters_table.c.id)
            )
        async with system.client() as staff:
            first = await staff.post(f"{API}/admin/demand/dead-letters/{dead_id}/replay")
            assert first.status_code == 200, first.text
            assert first.json()["outcome"] == "applied" and first.json()["replayed_at"]
            second = await staff.post(f"{API}/admin/demand/dead-letters/{dead_id}/replay")
            assert second.json()["outcome"] == "already-applied", second.text
            waiting = await staff.get(f"{API}/admin/demand/dead-letters")
            assert dead_id not in [item["id"] for item in waiting.json()["items"]]
            replayed = await staff.get(f"{API}/admin/demand/dead-letters", params={"status": "replayed"})
            assert dead_id in [item["id"] for item in replayed.json()["items"]]
        async with database.transaction(write=False) as session:
            name = await session.scalar(
                sa.text("SELECT name FROM match_enterprises WHERE enterprise_id = :id"),
                {"id": enterprise["id"]},
            )
            applied = await session.scalar(
                sa.text("SELECT count(*) FROM inbox WHERE event_id = :id"), {"id": event.id}
            )
        assert name == "Renamed by replay" and applied == 1
    finally:
        await database.dispose()


def enterprise_snapshot(enterprise: dict) -> dict:
    keys = ("enterprise_id", "name", "legal_form", "stage", "cohort_id", "postcode", "cpv_codes")
    out = {key: enterprise.get(key) for key in keys}
    out["enterprise_id"] = enterprise["id"]
    out["version"] = enterprise["version"]
    return out


async def test_only_staff_may_see_or_replay_dead_letters(system: System) -> None:
    async with system.client() as staff:
        anchor = await created(
            staff, "/anchors", {"name": f"Nosy anchor {uuid.uuid4().hex[:6]}", "type": "university"}
        )
    keys = {
        "anchor": (await system.create_key("anchor", anchor["id"]))["key"],
        "integrator": (await system.create_key("integrator"))["key"],
    }
    for part in PARTS:
        routes = [
            ("GET", f"{API}/admin/{part}/dead-letters"),
            ("GET", f"{API}/admin/{part}/dead-letters/1"),
            ("POST", f"{API}/admin/{part}/dead-letters/1/replay"),
        ]
        for role, key in keys.items():
            async with system.client(key) as http:
                for method, path in routes:
                    answer = await http.request(method, path)
                    assert answer.status_code == 403, (role, method, path, answer.text)
        async with httpx.AsyncClient(base_url=system.url) as anonymous:
            assert (await anonymous.get(routes[0][1])).status_code == 401
        async with system.client() as staff:
            listed = await staff.get(routes[0][1])
            assert listed.status_code == 200, (part, listed.text)
            assert (await staff.get(routes[1][1].replace("/1", "/987654321"))).status_code == 404
    async with system.client() as staff:
        assert (await staff.get(f"{API}/admin/nobody/dead-letters")).status_code == 404


async def test_the_dead_letter_routes_are_in_the_openapi_document(system: System) -> None:
    async with system.client() as staff:
        document = (await staff.get("/openapi.json")).json()
    for part in PARTS:
        assert "get" in document["paths"][f"{API}/admin/{part}/dead-letters"], part
        assert "get" in document["paths"][f"{API}/admin/{part}/dead-letters/{{dead_letter_id}}"], part
        assert "post" in document["paths"][f"{API}/admin/{part}/dead-letters/{{dead_letter_id}}/replay"], part
    json.dumps(document)  # whole and serialisable
