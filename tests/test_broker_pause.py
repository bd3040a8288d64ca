"""The whole system while its nats-server is paused (SIGSTOP: the connections stay open and
nothing answers) for longer than the JetStream duplicate window (set short here): writes go
through, every ``/readyz`` stays ready and says NATS is not, events flow again within seconds
once the server resumes, and an integrator's webhook and SSE stream get each event once."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress

import httpx
import pytest

from gateway.tests.webhook_receiver import Receiver, SseEvent, sse_events
from shared.testing.databases import DatabaseFactory
from shared.testing.system import System, freeze
from tests.conftest import API, boot, created, stream_messages

pytestmark = pytest.mark.slow

WINDOW = 2.0  # seconds: every stream's duplicate window in this system
PAUSE = 10.0  # seconds: five windows, and longer than a client takes to find the server silent
ANCHORS = 12  # written while NATS is paused, one demand.anchor.registered.v1 each


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, _database_factory_sync: DatabaseFactory
) -> Iterator[System]:
    env = {"SEEDBED_STREAM_DUPLICATE_WINDOW_SECONDS": str(WINDOW)}
    with boot(tmp_path_factory.mktemp("pause"), _database_factory_sync, env) as (booted, _clock):
        yield booted


async def readiness(system: System) -> dict[str, httpx.Response]:
    async with httpx.AsyncClient(timeout=10) as http:
        urls = {name: process.url for name, process in system.services.items()} | {"gateway": system.url}
        return {name: await http.get(f"{url}/readyz") for name, url in urls.items()}


async def collect(url: str, key: str, into: list[SseEvent], opened: asyncio.Event) -> None:
    """Read the integrator's SSE stream into ``into``, reconnecting with Last-Event-ID as a
    browser's EventSource does should the stream end."""
    last: int | None = None
    while True:
        headers = {"Authorization": f"Bearer {key}"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        with suppress(httpx.HTTPError):
            async with (
                httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60.0)) as http,
                http.stream(
                    "GET", f"{API}/events/stream", params={"types": "demand.*"}, headers=headers
                ) as response,
            ):
                if response.status_code == 200:
                    opened.set()
                    async for event in sse_events(response):
                        into.append(event)
                        last = event.id
        await asyncio.sleep(0.5)


async def test_a_pause_longer_than_the_duplicate_window_delays_events_by_seconds_and_doubles_none(
    system: System,
) -> None:
    tag = uuid.uuid4().hex[:6]
    integrator = (await system.create_key("integrator"))["key"]
    receiver = await Receiver().start()
    seen: list[SseEvent] = []
    opened = asyncio.Event()
    reader = asyncio.create_task(collect(system.url, integrator, seen, opened))
    try:
        async with system.client(integrator) as http:
            hook = await http.post(f"{API}/webhooks", json={"url": receiver.url, "types": ["demand.*"]})
            assert hook.status_code == 201, hook.text
        await asyncio.wait_for(opened.wait(), 15)

        async with system.client() as staff:
            warm_up = await created(staff, "/anchors", {"name": f"Before pause {tag}", "type": "university"})

            def got(anchor_ids: set[str]) -> bool:
                on_stream = {e.data["subject"] for e in seen}
                by_webhook = {r.event["subject"] for r in receiver.received}
                return anchor_ids <= on_stream and anchor_ids <= by_webhook

            await _until(lambda: got({warm_up["id"]}), 20, "the first event before the pause")

            assert system.nats.process is not None
            freeze(system.nats.process)
            try:
                paused_at = time.monotonic()
                written = []
                for n in range(ANCHORS):
                    started = time.monotonic()
                    made = await created(
                        staff, "/anchors", {"name": f"Paused {n} {tag}", "type": "housing_association"}
                    )
                    assert time.monotonic() - started < 2.0, "a write waited for NATS"
                    written.append(made["id"])
                    await asyncio.sleep(PAUSE / (2 * ANCHORS))
                await asyncio.sleep(max(0.0, PAUSE - (time.monotonic() - paused_at) - 2.5))
                during = await readiness(system)  # the last seconds of the pause
            finally:
                system.nats.process.send_signal(signal.SIGCONT)
            resumed = time.monotonic()
            await _until(lambda: got(set(written)), 30, "the events written during the pause")
            flowing_after = time.monotonic() - resumed

            async def nats_ok_everywhere() -> bool:
                answers = await readiness(system)
                return all(
                    r.status_code == 200 and r.json()["checks"]["nats"] == "ok" for r in answers.values()
                )

            await _until(nats_ok_everywhere, 15, "readiness to see NATS back")
            # One more event after the outage, then time for any late second copy to arrive.
            after = await created(staff, "/anchors", {"name": f"After pause {tag}", "type": "university"})
            await _until(lambda: got({after["id"]}), 15, "an event written after the pause")
            await asyncio.sleep(3 * WINDOW)
    finally:
        reader.cancel()
        with suppress(asyncio.CancelledError):
            await reader
        await receiver.stop()

    print(f"\nevents written during a {PAUSE:g} s pause all arrived {flowing_after:.2f} s after it ended")
    for name, answer in during.items():
        # Ready: each still serves (writes went through); NATS reported as not answering.
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json()["status"] == "degraded", (name, answer.text)
        assert answer.json()["checks"]["nats"] != "ok", (name, answer.text)

    mine = {warm_up["id"], *written, after["id"]}
    stream_ids = [e.data["id"] for e in seen if e.data["subject"] in mine]
    hook_ids = [r.headers["webhook-id"] for r in receiver.received if r.event["subject"] in mine]
    assert len(stream_ids) == len(set(stream_ids)) == len(mine), "an event twice (or missing) on SSE"
    assert len(hook_ids) == len(set(hook_ids)) == len(mine), "an event twice (or missing) by webhook"
    stored = [m.event["id"] for m in await stream_messages(system.nats.url, ("DEMAND",))]
    assert len(stored) == len(set(stored)), "an event stored twice in DEMAND"
    assert flowing_after < 15, f"events took {flowing_after:.1f} s to flow again"


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.1)
