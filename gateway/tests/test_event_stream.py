"""The SSE event stream, through the real gateway process of the running system (its edge and
request-context middleware included), and through an in-process gateway served by uvicorn
where a test needs its own settings. Events come from the three real services, created
through the gateway, or are published to the services' streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import nats
import pytest
import uvicorn
from fastapi import FastAPI

from gateway.event_stream import EVENTS_STREAM
from gateway.tests.conftest import GatewayFactory, System, client_of, wait_until
from gateway.tests.test_authorization_matrix import demand_body, enterprise_body, mentor_body
from gateway.tests.webhook_receiver import (
    Receiver,
    SseEvent,
    make_service_streams,
    publish,
    read_until,
    sse_events,
)
from shared.testing.ports import server_port

STREAM = "/api/v1/events/stream"


@asynccontextmanager
async def event_stream(
    base_url: str, key: str, params: dict[str, Any] | None = None, last_event_id: int | None = None
) -> AsyncIterator[AsyncIterator[SseEvent]]:
    headers = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0)) as http,
        http.stream("GET", STREAM, params=params, headers=headers) as response,
    ):
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield sse_events(response)


async def create(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    made = await http.post(path, json=body)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def ids_in(events: list[SseEvent], key: str) -> set[str]:
    return {str(e.data["data"].get(key)) for e in events if e.data.get("data")}


@pytest.fixture(scope="module")
def anchor_id(system: System) -> str:
    with httpx.Client(base_url=system.url, headers={"Authorization": f"Bearer {system.staff_key}"}) as http:
        made = http.post(
            "/api/v1/anchors", json={"name": f"Stream anchor {uuid.uuid4().hex[:6]}", "type": "university"}
        )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def test_events_of_all_three_services_arrive_in_stream_order_with_their_positions(
    system: System, anchor_id: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    async with event_stream(system.url, system.staff_key) as events, system.client() as http:
        enterprise = await create(http, "/api/v1/enterprises", enterprise_body(f"Stream {tag}"))
        line = await create(http, "/api/v1/demand", demand_body(anchor_id, f"Stream {tag}"))
        mentor = await create(http, "/api/v1/mentors", mentor_body(f"Stream Mentor {tag}"))

        def all_three(seen: list[SseEvent]) -> bool:
            return (
                enterprise in ids_in(seen, "enterprise_id")
                and line in ids_in(seen, "demand_id")
                and mentor in ids_in(seen, "mentor_id")
            )

        seen = await read_until(events, all_three)
    positions = [e.id for e in seen]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    types = {e.event for e in seen}
    assert {
        "enterprises.enterprise.registered.v1",
        "demand.item.published.v1",
        "mentoring.mentor.registered.v1",
    } <= types
    assert all(e.event == e.data["type"] and e.data["specversion"] == "1.0" for e in seen)


async def test_a_reconnect_with_last_event_id_resumes_without_loss_or_repeats(
    system: System, anchor_id: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    titles = [f"Resume {tag} {n}" for n in range(6)]

    def has_lines(names: list[str]):
        def done(seen: list[SseEvent]) -> bool:
            got = {e.data["data"].get("title") for e in seen if e.event == "demand.item.published.v1"}
            return set(names) <= got

        return done

    async with event_stream(system.url, system.staff_key) as reference, system.client() as http:
        async with event_stream(system.url, system.staff_key) as first:
            for title in titles[:3]:
                await create(http, "/api/v1/demand", demand_body(anchor_id, title))
            before = await read_until(first, has_lines(titles[:3]))
        # Disconnected: what happens now must come with the reconnection.
        for title in titles[3:]:
            await create(http, "/api/v1/demand", demand_body(anchor_id, title))
        async with event_stream(system.url, system.staff_key, last_event_id=before[-1].id) as second:
            after = await read_until(second, has_lines(titles[3:]))
        everything = await read_until(reference, has_lines(titles))
    resumed = [e.id for e in before + after]
    expected = [e.id for e in everything if before[0].id <= e.id <= after[-1].id]
    assert resumed == expected
    assert len(set(resumed)) == len(resumed)


async def test_each_role_sees_only_its_events_and_types_filters_within_them(
    system: System, anchor_id: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    integrator = (await system.create_key("integrator"))["key"]
    anchor = (await system.create_key("anchor", anchor_id))["key"]
    async with (
        event_stream(system.url, system.staff_key) as staff,
        event_stream(system.url, integrator) as integrators,
        event_stream(system.url, anchor) as anchors,
        event_stream(system.url, system.staff_key, {"types": "demand.item.*"}) as items_only,
        system.client() as http,
    ):
        enterprise = await create(http, "/api/v1/enterprises", enterprise_body(f"Visibility {tag}"))
        mentor = await create(http, "/api/v1/mentors", mentor_body(f"Visibility Mentor {tag}"))
        await read_until(
            staff,
            lambda seen: enterprise in ids_in(seen, "enterprise_id") and mentor in ids_in(seen, "mentor_id"),
        )
        # Everything above is in the stream now; a line made after it comes after it.
        sentinel = await create(http, "/api/v1/demand", demand_body(anchor_id, f"Visibility {tag}"))
        arrived = lambda seen: sentinel in ids_in(seen, "demand_id")  # noqa: E731
        seen_by_integrator = await read_until(integrators, arrived)
        seen_by_anchor = await read_until(anchors, arrived)
        seen_items = await read_until(items_only, arrived)
    assert {e.event.split(".")[0] for e in seen_by_integrator} == {"demand"}
    assert not any(e.event.startswith("enterprises.") for e in seen_by_anchor)
    assert mentor in ids_in(seen_by_anchor, "mentor_id")
    assert enterprise not in ids_in(seen_by_anchor + seen_by_integrator, "enterprise_id")
    assert all(e.event.startswith("demand.item.") for e in seen_items)


async def test_a_stream_the_role_may_not_see_or_cannot_parse_is_refused(system: System) -> None:
    integrator = (await system.create_key("integrator"))["key"]
    enterprise = (await system.create_key("enterprise"))["key"]
    async with httpx.AsyncClient(base_url=system.url, timeout=10) as http:
        hidden = await http.get(
            STREAM,
            params={"types": "demand.*,enterprises.*"},
            headers={"Authorization": f"Bearer {integrator}"},
        )
        garbled = await http.get(
            STREAM, params={"types": "demand"}, headers={"Authorization": f"Bearer {integrator}"}
        )
        bad_id = await http.get(
            STREAM, headers={"Authorization": f"Bearer {integrator}", "Last-Event-ID": "yesterday"}
        )
        wrong_role = await http.get(STREAM, headers={"Authorization": f"Bearer {enterprise}"})
        nobody = await http.get(STREAM)
    assert hidden.status_code == 403 and hidden.json()["types"] == ["enterprises.*"]
    assert hidden.headers["content-type"] == "application/problem+json"
    assert garbled.status_code == 422 and garbled.json()["errors"][0]["field"] == "types"
    assert bad_id.status_code == 422 and bad_id.json()["errors"][0]["field"] == "Last-Event-ID"
    assert wrong_role.status_code == 403
    assert nobody.status_code == 401


async def test_the_consumer_of_a_stream_goes_when_its_client_does(system: System) -> None:
    nc = await nats.connect(system.nats.url)
    try:
        js = nc.jetstream()

        async def consumers() -> int:
            return (await js.stream_info(EVENTS_STREAM)).state.consumer_count

        baseline = await consumers()
        async with event_stream(system.url, system.staff_key):
            assert await consumers() == baseline + 1

        async def back() -> bool:
            return await consumers() == baseline

        await wait_until(back, timeout=3, interval=0.05)
    finally:
        await nc.close()


async def test_an_aggregate_only_line_never_reaches_a_webhook_or_the_stream(
    system: System, anchor_id: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    receiver = await Receiver().start()
    try:
        async with system.client() as http:
            made = await http.post(
                "/api/v1/webhooks", json={"url": receiver.url, "types": ["*"], "description": "no leaks"}
            )
            assert made.status_code == 201, made.text
            hook = made.json()
            try:
                async with event_stream(system.url, system.staff_key) as events:
                    hidden = await create(
                        http,
                        "/api/v1/demand",
                        demand_body(anchor_id, f"Hidden {tag}", visibility="aggregate_only"),
                    )
                    # A public line made to go public then hidden, and a sentinel after both.
                    public = await create(http, "/api/v1/demand", demand_body(anchor_id, f"Public {tag}"))
                    patched = await http.patch(
                        f"/api/v1/demand/{public}", json={"visibility": "aggregate_only"}
                    )
                    assert patched.status_code == 200, patched.text
                    sentinel = await create(http, "/api/v1/demand", demand_body(anchor_id, f"Sentinel {tag}"))
                    seen = await read_until(events, lambda s: sentinel in ids_in(s, "demand_id"))
                await wait_until(
                    lambda: any(sentinel in r.body.decode() for r in receiver.received), timeout=15
                )
            finally:
                await http.delete(f"/api/v1/webhooks/{hook['id']}")
    finally:
        await receiver.stop()
    posted = b"".join(r.body for r in receiver.received).decode()
    streamed = " ".join(str(e.data) for e in seen)
    for text in (posted, streamed):
        assert hidden not in text and f"Hidden {tag}" not in text
    # The line that left the public view is announced as withdrawn, without its content.
    withdrawn = [
        e for e in seen if e.event == "demand.item.withdrawn.v1" and e.data["data"]["demand_id"] == public
    ]
    assert withdrawn and "title" not in withdrawn[0].data["data"]


# -- an in-process gateway of its own settings, served by uvicorn ---------------------------


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """Serve an app whose lifespan is already running, on a free port, through uvicorn."""
    port = server_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False)
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_heartbeats_keep_a_quiet_stream_open_and_a_revoked_key_ends_it(
    gateway_over: GatewayFactory, nats_url: str
) -> None:
    await make_service_streams(nats_url)
    async with gateway_over(sse_heartbeat_seconds=0.1) as app, served(app) as url:
        async with client_of(app) as staff:
            made = await staff.post("/api/v1/api-keys", json={"role": "integrator", "name": "stream"})
        key, key_id = made.json()["key"], made.json()["id"]
        await wait_until(lambda: app.state.runtime.event_stream.ready.is_set(), timeout=10)
        lines: list[str] = []
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as http,
            http.stream("GET", STREAM, headers={"Authorization": f"Bearer {key}"}) as response,
        ):
            assert response.status_code == 200
            reading = response.aiter_lines()

            async def read_line() -> str:
                line = await asyncio.wait_for(reading.__anext__(), 5)
                lines.append(line)
                return line

            while lines.count(": keep-alive") < 2:
                await read_line()
            event = await publish(nats_url, "demand.item.published.v1", {"demand_id": "d", "version": 1})
            while f'"id":"{event.id}"' not in "".join(lines):
                await read_line()
            async with client_of(app) as staff:
                assert (await staff.delete(f"/api/v1/api-keys/{key_id}")).status_code == 204
            with pytest.raises(StopAsyncIteration):  # the stream ends at the next heartbeat
                while True:
                    await read_line()
    assert ": credential no longer valid, or not checkable now" in lines
    assert any(line.startswith("id: ") for line in lines) and "event: demand.item.published.v1" in lines


async def test_since_replays_what_the_stream_holds_and_too_many_streams_are_refused(
    gateway_over: GatewayFactory, nats_url: str
) -> None:
    await make_service_streams(nats_url)
    published = [
        await publish(nats_url, "demand.item.published.v1", {"demand_id": str(n), "version": 1})
        for n in range(3)
    ]
    async with gateway_over(sse_max_streams_per_credential=1) as app, served(app) as url:
        await wait_until(lambda: app.state.runtime.event_stream.ready.is_set(), timeout=10)
        client_key = app.state.settings.bootstrap_staff_key.get_secret_value()
        async with event_stream(url, client_key, {"since": 0}) as events:
            replayed = await read_until(events, lambda seen: len(seen) == 3)
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                second = await http.get(STREAM, headers={"Authorization": f"Bearer {client_key}"})
        async with event_stream(url, client_key, {"since": replayed[0].id}) as events:
            rest = await read_until(events, lambda seen: len(seen) == 2)
    assert [e.data["id"] for e in replayed] == [e.id for e in published]
    assert [e.id for e in replayed] == [1, 2, 3]
    assert [e.id for e in rest] == [2, 3]
    assert second.status_code == 429 and second.headers["retry-after"]


async def test_a_stale_line_event_reaches_only_its_own_anchors_stream_and_staff(
    system: System, anchor_id: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    other_id = await system.subject("anchor")
    owner = (await system.create_key("anchor", anchor_id))["key"]
    other = (await system.create_key("anchor", other_id))["key"]
    integrator = (await system.create_key("integrator"))["key"]
    stale_line = str(uuid.uuid4())
    async with (
        event_stream(system.url, system.staff_key, {"types": "demand.item.*"}) as staff,
        event_stream(system.url, owner) as owners,
        event_stream(system.url, other) as others,
        event_stream(system.url, integrator, {"types": "demand.item.*"}) as integrators,
        system.client() as http,
    ):
        # As the demand service's stale-lines job sends it (a draft: no other event names it).
        stale = {
            "demand_id": stale_line, "version": 1, "anchor_id": anchor_id, "title": f"Stale {tag}",
            "status": "draft", "visibility": "public", "expected_tender_date": "2026-01-01",
            "stale_since": "2026-01-02T00:00:00Z", "left_pipeline": True,
        }  # fmt: skip
        await publish(system.nats.url, "demand.item.stale.v1", stale, subject=stale_line)
        sentinel = await create(http, "/api/v1/demand", demand_body(anchor_id, f"After stale {tag}"))
        arrived = lambda seen: sentinel in ids_in(seen, "demand_id")  # noqa: E731
        seen = {
            "staff": await read_until(staff, arrived),
            "owner": await read_until(owners, arrived),
            "other": await read_until(others, arrived),
            "integrator": await read_until(integrators, arrived),
        }
    told = {who for who, events in seen.items() if stale_line in ids_in(events, "demand_id")}
    assert told == {"staff", "owner"}
    # Integrators are refused the type outright.
    async with httpx.AsyncClient(base_url=system.url, timeout=10) as http:
        refused = await http.get(
            STREAM,
            params={"types": "demand.item.stale.v1"},
            headers={"Authorization": f"Bearer {integrator}"},
        )
    assert refused.status_code == 403
