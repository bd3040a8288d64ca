"""Webhooks, in-process gateways on each database backend, a real nats-server and real HTTP
receivers: events published to the services' streams reach the subscribed URLs signed per
Standard Webhooks, failures are retried on the schedule and logged, redelivery and deletion
do what they say, and two replicas on one database deliver each event once."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from gateway.deliveries import Claimed, Dispatcher
from gateway.event_stream import EVENTS_STREAM
from gateway.models import webhook_subscriptions
from gateway.settings import GatewaySettings
from gateway.tests.conftest import GatewayFactory, System, client_of, wait_until
from gateway.tests.webhook_receiver import Receiver, make_service_streams, publish, verify_standard_webhook
from gateway.webhooks import SecretBox, check_url, new_secret
from shared.db import Database

SCHEDULE = [0.05, 0.05, 0.05]  # three retries: four attempts in all
FAST = {
    "webhook_retry_schedule_seconds": SCHEDULE,
    "webhook_poll_seconds": 0.05,
    "webhook_attempt_timeout_seconds": 2.0,
    "events_sources_check_seconds": 0.05,
}
ITEM = "demand.item.published.v1"


def demand_line(title: str = "School meals") -> dict[str, Any]:
    return {"demand_id": str(uuid.uuid4()), "version": 1, "title": title, "estimated_value_pence": 12_000_000}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiving = await Receiver().start()
    yield receiving
    await receiving.stop()


@pytest.fixture
async def streams(nats_url: str) -> str:
    await make_service_streams(nats_url)
    return nats_url


async def key_of(app: FastAPI, role: str, subject_id: str | None = None) -> str:
    async with client_of(app) as http:
        made = await http.post(
            "/api/v1/api-keys", json={"role": role, "subject_id": subject_id, "name": role}
        )
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


async def subscribe(http: httpx.AsyncClient, url: str, types: list[str], **extra: Any) -> dict[str, Any]:
    made = await http.post("/api/v1/webhooks", json={"url": url, "types": types, **extra})
    assert made.status_code == 201, made.text
    return dict(made.json())


async def deliveries(http: httpx.AsyncClient, webhook_id: str, **params: Any) -> list[dict[str, Any]]:
    answer = await http.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


async def test_an_event_is_posted_signed_per_standard_webhooks_and_logged(
    gateway_app: GatewayFactory, streams: str, receiver: Receiver
) -> None:
    async with gateway_app(**FAST) as app, client_of(app) as http:
        hook = await subscribe(http, receiver.url, ["demand.item.*"], description="our portal")
        assert hook["secret"].startswith("whsec_") and hook["active"] is True
        listed = (await http.get("/api/v1/webhooks")).json()["items"]
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
        published = await publish(streams, ITEM, demand_line(), subject="line-1")
        await publish(
            streams, "enterprises.enterprise.registered.v1", {"enterprise_id": "e"}
        )  # not subscribed
        await wait_until(lambda: receiver.received, timeout=10)
        await asyncio.sleep(0.2)  # time for anything that should not come
        log = await deliveries(http, hook["id"])
    [got] = receiver.received
    assert verify_standard_webhook(hook["secret"], got.headers, got.body)
    assert not verify_standard_webhook("whsec_" + "A" * 44, got.headers, got.body)
    assert got.headers["webhook-id"] == published.id
    assert got.headers["content-type"] == "application/cloudevents+json"
    assert (
        got.event["type"] == ITEM and got.event["data"] == published.data and got.event["subject"] == "line-1"
    )
    [delivery] = log
    assert delivery["status"] == "delivered" and delivery["event_id"] == published.id
    assert delivery["attempts"] == 1 and delivery["attempt_log"][0]["status_code"] == 204


async def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt_once(
    gateway_app: GatewayFactory, streams: str, receiver: Receiver
) -> None:
    receiver.plan = [500, 503]
    async with gateway_app(**FAST) as app, client_of(app) as http:
        hook = await subscribe(http, receiver.url, [ITEM])
        published = await publish(streams, ITEM, demand_line())

        async def delivered() -> bool:
            return [d["status"] for d in await deliveries(http, hook["id"])] == ["delivered"]

        await wait_until(delivered, timeout=10)
        [delivery] = await deliveries(http, hook["id"])
    assert [r.status for r in receiver.received] == [500, 503, 204]
    assert set(receiver.ids()) == {published.id}  # the same webhook-id on every attempt
    assert delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 503, 204]
    assert delivery["attempt_log"][0]["error"] == "the receiver answered 500"
    assert all(a["duration_ms"] >= 0 and a["attempted_at"] for a in delivery["attempt_log"])


async def test_a_dead_receiver_fails_after_the_schedule_and_a_redelivery_reaches_it_later(
    gateway_app: GatewayFactory, streams: str
) -> None:
    port_receiver = Receiver()
    await port_receiver.start()
    url = port_receiver.url
    await port_receiver.stop()  # nothing listens there now
    async with gateway_app(**FAST) as app, client_of(app) as http:
        hook = await subscribe(http, url, ["demand.*"])
        await publish(streams, ITEM, demand_line())

        async def failed() -> bool:
            return [d["status"] for d in await deliveries(http, hook["id"])] == ["failed"]

        await wait_until(failed, timeout=10)
        [delivery] = await deliveries(http, hook["id"])
        assert delivery["attempts"] == 1 + len(SCHEDULE)
        assert all(a["status_code"] is None and a["error"] for a in delivery["attempt_log"])
        assert (await http.get("/api/v1/webhooks")).json()["items"][0]["consecutive_failures"] == 1

        await port_receiver.start()  # the receiver is back
        try:
            again = await http.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver")
            assert again.status_code == 202, again.text
            assert again.json()["status"] == "pending"

            async def delivered() -> bool:
                return [d["status"] for d in await deliveries(http, hook["id"])] == ["delivered"]

            await wait_until(delivered, timeout=10)
            [delivery] = await deliveries(http, hook["id"])
            missing = await http.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{uuid.uuid4()}/redeliver")
        finally:
            await port_receiver.stop()
    assert delivery["attempts"] == 2 + len(SCHEDULE)
    assert len(port_receiver.received) == 1
    assert missing.status_code == 404


async def test_deleting_a_subscription_stops_its_deliveries(
    gateway_app: GatewayFactory, streams: str, receiver: Receiver
) -> None:
    receiver.default = 500  # keeps the first delivery retrying
    schedule = {**FAST, "webhook_retry_schedule_seconds": [0.3] * 10}
    async with gateway_app(**schedule) as app, client_of(app) as http:
        hook = await subscribe(http, receiver.url, ["demand.*"])
        await publish(streams, ITEM, demand_line())
        await wait_until(lambda: receiver.received, timeout=10)
        deleted = await http.delete(f"/api/v1/webhooks/{hook['id']}")
        assert deleted.status_code == 204
        seen = len(receiver.received)
        await publish(streams, ITEM, demand_line("After the deletion"))
        await asyncio.sleep(1.0)  # three retry intervals and a new event: none may come
        gone = await http.get(f"/api/v1/webhooks/{hook['id']}/deliveries")
        again = await http.delete(f"/api/v1/webhooks/{hook['id']}")
    assert len(receiver.received) == seen
    assert gone.status_code == 404 and again.status_code == 404


async def test_deleting_a_subscription_stops_the_deliveries_a_dispatcher_already_holds_for_it(
    gateway_app: GatewayFactory, streams: str
) -> None:
    """A backlog is claimed several deliveries at a time; deleting the subscription while the
    first attempt hangs sends none of the others."""
    slow = await Receiver(hold=asyncio.Event()).start()
    bounds = {"webhook_concurrency_per_endpoint": 1, "webhook_attempt_timeout_seconds": 60.0}
    try:
        async with gateway_app(**(FAST | bounds)) as app, client_of(app) as http:
            hook = await subscribe(http, slow.url, [ITEM])
            for n in range(6):
                await publish(streams, ITEM, demand_line(f"Line {n}"))
            await wait_until(lambda: sum(slow.waiting.values()) == 1, timeout=10)
            assert (await http.delete(f"/api/v1/webhooks/{hook['id']}")).status_code == 204
            await asyncio.sleep(1.2)  # longer than a held queue trusts its subscription unread
            assert slow.hold is not None
            slow.hold.set()
            await asyncio.sleep(1.0)
    finally:
        await slow.stop()
    assert len(slow.received) == 1


async def test_a_subscription_made_with_a_key_stops_delivering_when_the_key_is_revoked(
    gateway_app: GatewayFactory, streams: str, receiver: Receiver
) -> None:
    async with gateway_app(**FAST) as app:
        key = await key_of(app, "integrator")
        async with client_of(app, key) as http:
            await subscribe(http, receiver.url, ["demand.*"])
            me = (await http.get("/api/v1/me")).json()
        await publish(streams, ITEM, demand_line())
        await wait_until(lambda: len(receiver.received) == 1, timeout=10)
        async with client_of(app) as staff:
            assert (await staff.delete(f"/api/v1/api-keys/{me['key_id']}")).status_code == 204
        await publish(streams, ITEM, demand_line("After the revocation"))
        await asyncio.sleep(0.5)
    assert len(receiver.received) == 1


async def test_owners_see_only_their_subscriptions_and_roles_only_their_events(
    gateway_app: GatewayFactory, streams: str, receiver: Receiver, system: System
) -> None:
    async with gateway_app(upstreams=system.upstreams(), **FAST) as app:
        anchor_id = await system.subject("anchor")
        integrator_a, integrator_b = await key_of(app, "integrator"), await key_of(app, "integrator")
        anchor_1, anchor_1_again = (
            await key_of(app, "anchor", anchor_id),
            await key_of(app, "anchor", anchor_id),
        )
        enterprise = await key_of(app, "enterprise", await system.subject("enterprise"))
        async with client_of(app, integrator_a) as a, client_of(app, integrator_b) as b:
            mine = await subscribe(a, receiver.url, ["*"])
            assert (await b.get("/api/v1/webhooks")).json()["items"] == []
            assert (await b.delete(f"/api/v1/webhooks/{mine['id']}")).status_code == 404
            assert (await b.get(f"/api/v1/webhooks/{mine['id']}/deliveries")).status_code == 404
            refused = await a.post("/api/v1/webhooks", json={"url": receiver.url, "types": ["enterprises.*"]})
            bad = await a.post("/api/v1/webhooks", json={"url": receiver.url, "types": ["demand"]})
            no_host = await a.post("/api/v1/webhooks", json={"url": "http:///hook", "types": ["demand.*"]})
        async with client_of(app, anchor_1) as one, client_of(app, anchor_1_again) as again:
            anchors = await subscribe(one, receiver.url, ["mentoring.*"])
            assert [h["id"] for h in (await again.get("/api/v1/webhooks")).json()["items"]] == [anchors["id"]]
        async with client_of(app, enterprise) as ent:
            assert (await ent.get("/api/v1/webhooks")).status_code == 403
        async with client_of(app) as staff:
            assert len((await staff.get("/api/v1/webhooks")).json()["items"]) == 2
        await publish(streams, "enterprises.enterprise.registered.v1", {"enterprise_id": "e"})
        await publish(streams, "mentoring.session.booked.v1", {"session_id": "s"})
        await publish(streams, "mentoring.mentor.registered.v1", {"mentor_id": "m"})
        last = await publish(streams, ITEM, demand_line())
        try:
            await wait_until(lambda: last.id in receiver.ids() and len(receiver.received) >= 2, timeout=10)
        except TimeoutError:
            async with client_of(app) as staff:
                logs = {h: await deliveries(staff, h) for h in (mine["id"], anchors["id"])}
            consumer = app.state.runtime.webhooks_consumer
            counts = (consumer.processed_total, consumer.duplicates_total, consumer.dead_lettered_total)
            raise AssertionError(f"received {receiver.ids()}; deliveries {logs}; consumer {counts}") from None
        await asyncio.sleep(0.2)
    assert refused.status_code == 403 and refused.json()["types"] == ["enterprises.*"]
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("types")
    assert no_host.status_code == 422 and no_host.json()["errors"][0]["field"] == "url"
    by_type = sorted(r.event["type"] for r in receiver.received)
    # The integrator's "*" is what an integrator may see; the anchor's "mentoring.*" is the mentors.
    assert by_type == [ITEM, "mentoring.mentor.registered.v1"]


async def test_two_replicas_on_one_database_deliver_each_event_once(
    gateway_app: GatewayFactory, streams: str, receiver: Receiver, db_backend: str
) -> None:
    if db_backend != "postgres":
        pytest.skip("several replicas share a PostgreSQL database")
    async with gateway_app(**FAST) as one, gateway_app(**FAST) as two, client_of(one) as http:
        hook = await subscribe(http, receiver.url, ["demand.*"])
        published = [await publish(streams, ITEM, demand_line(f"Line {n}")) for n in range(40)]
        await wait_until(lambda: len(receiver.received) >= len(published), timeout=20)
        await asyncio.sleep(0.3)
        log = await deliveries(http, hook["id"], limit=100)
        attempts = [one.state.runtime.dispatcher.attempts_total, two.state.runtime.dispatcher.attempts_total]
    assert sorted(receiver.ids()) == sorted(e.id for e in published)
    assert {d["status"] for d in log} == {"delivered"} and all(d["attempts"] == 1 for d in log)
    assert sum(attempts) == len(published) and min(attempts) > 0, attempts  # both dispatchers worked


async def test_the_secret_is_stored_sealed_and_opens_only_under_its_key_and_id(
    gateway_app: GatewayFactory, gateway_database_url: str, streams: str, receiver: Receiver
) -> None:
    async with gateway_app(**FAST) as app, client_of(app) as http:
        hook = await subscribe(http, receiver.url, ["demand.*"])
        settings: GatewaySettings = app.state.settings
    database = Database(gateway_database_url)
    try:
        async with database.transaction(write=False) as session:
            stored = await session.scalar(sa.select(webhook_subscriptions.c.secret))
    finally:
        await database.dispose()
    assert hook["secret"] not in stored and hook["secret"][6:] not in stored
    hook_id = uuid.UUID(hook["id"])
    assert SecretBox(settings).open(stored, hook_id) == hook["secret"]
    with pytest.raises(ValueError):
        SecretBox(settings).open(stored, uuid.uuid4())
    other = settings.model_copy(
        update={"webhook_encryption_key": settings.api_key_pepper.__class__("another")}
    )
    with pytest.raises(ValueError):
        SecretBox(other).open(stored, hook_id)


@pytest.mark.parametrize(
    ("url", "environment", "allowed"),
    [
        ("https://93.184.215.14/hook", "production", True),
        ("http://93.184.215.14/hook", "production", False),  # https only in production
        ("https://127.0.0.1/hook", "production", False),
        ("https://10.1.2.3/hook", "production", False),
        ("https://169.254.169.254/latest/meta-data", "production", False),  # cloud metadata
        ("https://[::1]/hook", "production", False),
        ("https://[::ffff:127.0.0.1]/hook", "production", False),
        # IPv6 forms that embed 127.0.0.1 or a private IPv4 address
        ("https://[::127.0.0.1]/hook", "production", False),  # IPv4-compatible
        ("https://[64:ff9b::7f00:1]/hook", "production", False),  # NAT64
        ("https://[64:ff9b:1::7f00:1]/hook", "production", False),  # NAT64, local use
        ("https://[2002:7f00:1::]/hook", "production", False),  # 6to4
        ("https://[2002:a01:203::]/hook", "production", False),  # 6to4 of 10.1.2.3
        ("https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook", "production", False),  # Teredo
        ("https://[2606:4700:4700::1111]/hook", "production", True),
        ("https://[64:ff9b::5db8:d70e]/hook", "production", True),  # NAT64 of 93.184.215.14
        ("https://[2002:5db8:d70e::1]/hook", "production", True),  # 6to4 of 93.184.215.14
        ("https://localhost/hook", "production", False),
        ("https://user:pass@93.184.215.14/hook", "production", False),
        ("http://127.0.0.1:8080/hook", "test", True),
        ("ftp://example.org/hook", "test", False),
    ],
)
async def test_the_url_policy_refuses_plain_http_and_private_addresses_in_production(
    url: str, environment: str, allowed: bool
) -> None:
    production = {"api_key_pepper": secrets.token_urlsafe(32), "internal_secret": secrets.token_urlsafe(32)}
    extra = production if environment == "production" else {}
    settings = GatewaySettings(environment=environment, **extra)
    if allowed:
        assert await check_url(url, settings) == url
    else:
        with pytest.raises(ValueError):
            await check_url(url, settings)


async def test_the_events_stream_sources_a_service_stream_that_appears_later(
    gateway_app: GatewayFactory, nats_url: str, receiver: Receiver
) -> None:
    async with gateway_app(**FAST) as app, client_of(app) as http:
        await wait_until(lambda: app.state.runtime.event_stream.ready.is_set(), timeout=10)
        assert app.state.runtime.event_stream.sourced == frozenset()
        await subscribe(http, receiver.url, ["demand.*"])
        await make_service_streams(nats_url)  # the services start after the gateway
        published = await publish(nats_url, ITEM, demand_line())
        await wait_until(lambda: published.id in receiver.ids(), timeout=10)
        assert app.state.runtime.event_stream.sourced == {"ENTERPRISES", "DEMAND", "MENTORING"}
        info = await app.state.runtime.nats.js.stream_info(EVENTS_STREAM)
    assert {source.name for source in info.config.sources} == {"ENTERPRISES", "DEMAND", "MENTORING"}


async def test_a_subscription_failing_delivery_after_delivery_is_disabled_until_a_redelivery_succeeds(
    gateway_app: GatewayFactory, streams: str
) -> None:
    dead = Receiver()
    await dead.start()
    await dead.stop()  # nothing listens at its URL for now
    async with gateway_app(**FAST, webhook_disable_after_failed_deliveries=2) as app, client_of(app) as http:
        hook = await subscribe(http, dead.url, ["demand.*"])
        for n in range(2):
            await publish(streams, ITEM, demand_line(f"Line {n}"))

        async def disabled() -> bool:
            return (await http.get("/api/v1/webhooks")).json()["items"][0]["active"] is False

        await wait_until(disabled, timeout=10)
        listed = (await http.get("/api/v1/webhooks")).json()["items"][0]
        await publish(streams, ITEM, demand_line("While disabled"))
        await asyncio.sleep(0.3)
        log = await deliveries(http, hook["id"])
        assert len(log) == 2 and {d["status"] for d in log} == {"failed"}  # nothing new while disabled
        await dead.start()
        try:
            again = await http.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{log[0]['id']}/redeliver")
            assert again.status_code == 202

            async def enabled() -> bool:
                return (await http.get("/api/v1/webhooks")).json()["items"][0]["active"] is True

            await wait_until(enabled, timeout=10)
            enabled_again = (await http.get("/api/v1/webhooks")).json()["items"][0]
        finally:
            await dead.stop()
    assert listed["consecutive_failures"] == 2 and "2 failed deliveries in a row" in listed["disabled_reason"]
    assert enabled_again["consecutive_failures"] == 0 and enabled_again["disabled_reason"] is None
    assert len(dead.received) == 1


async def test_one_owner_holds_a_bounded_number_of_subscriptions(
    gateway_app: GatewayFactory, streams: str
) -> None:
    async with gateway_app(**FAST, webhook_max_subscriptions_per_owner=2) as app:
        key = await key_of(app, "integrator")
        async with client_of(app, key) as http:
            answers = [
                (
                    await http.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "types": ["*"]})
                ).status_code
                for _ in range(3)
            ]
        async with client_of(app) as staff:
            made_by_staff = await staff.post(
                "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "types": ["*"]}
            )
    assert answers == [201, 201, 409]
    assert made_by_staff.status_code == 201


async def test_webhooks_resume_when_the_events_stream_is_lost_and_made_again(
    gateway_over: GatewayFactory, nats_url: str, receiver: Receiver
) -> None:
    await make_service_streams(nats_url)
    async with gateway_over(**FAST, events_stream_check_seconds=0.1) as app, client_of(app) as http:
        await subscribe(http, receiver.url, ["demand.*"])
        first = await publish(nats_url, ITEM, demand_line())
        await wait_until(lambda: first.id in receiver.ids(), timeout=10)
        # NATS loses the stream (a store wiped, an operator's mistake): the gateway makes it again
        # and its consumer with it.
        await app.state.runtime.nats.js.delete_stream(EVENTS_STREAM)
        await wait_until(lambda: app.state.runtime.event_stream.generation == 1, timeout=10)
        second = await publish(nats_url, ITEM, demand_line("After the loss"))
        await wait_until(lambda: second.id in receiver.ids(), timeout=10)
    assert receiver.ids().count(first.id) == 1  # the first event, sourced again, was not sent again


async def test_a_paused_subscription_gets_nothing_until_its_owner_resumes_it(
    gateway_app: GatewayFactory, streams: str, receiver: Receiver
) -> None:
    async with gateway_app(**FAST) as app:
        key = await key_of(app, "integrator")
        async with client_of(app, key) as http, client_of(app, await key_of(app, "integrator")) as other:
            hook = await subscribe(http, receiver.url, ["demand.*"], description="the hub")
            paused = await http.patch(f"/api/v1/webhooks/{hook['id']}", json={"active": False})
            assert paused.status_code == 200, paused.text
            assert paused.json()["active"] is False
            assert paused.json()["disabled_reason"] == "disabled by its owner"
            assert paused.json()["description"] == "the hub"
            await publish(streams, ITEM, demand_line("While paused"))
            await asyncio.sleep(0.5)
            assert receiver.received == [] and await deliveries(http, hook["id"]) == []
            not_theirs = await other.patch(f"/api/v1/webhooks/{hook['id']}", json={"active": True})
            assert not_theirs.status_code == 404
            null = await http.patch(f"/api/v1/webhooks/{hook['id']}", json={"active": None})
            assert null.status_code == 422 and null.json()["errors"][0]["field"].endswith("active")
            resumed = await http.patch(
                f"/api/v1/webhooks/{hook['id']}", json={"active": True, "description": None}
            )
            assert resumed.status_code == 200, resumed.text
            assert resumed.json()["active"] is True and resumed.json()["disabled_at"] is None
            assert resumed.json()["description"] is None
            await publish(streams, ITEM, demand_line("After resuming"))
            await wait_until(lambda: len(receiver.received) == 1, timeout=10)
    assert receiver.received[0].event["data"]["title"] == "After resuming"


async def test_a_slow_integrators_receivers_do_not_hold_up_another_integrators_deliveries(
    gateway_app: GatewayFactory, streams: str, receiver: Receiver
) -> None:
    """Integrator B's five endpoints hang; integrator A's one endpoint answers at once. A's
    deliveries all go out while B's are still waiting, and B holds at most its bounds."""
    slow = await Receiver(hold=asyncio.Event()).start()
    bounds = {
        "webhook_concurrency": 6,
        "webhook_concurrency_per_endpoint": 1,
        "webhook_concurrency_per_owner": 2,
        "webhook_attempt_timeout_seconds": 60.0,  # B's attempts hang for the whole test, not time out
    }
    try:
        async with gateway_app(**(FAST | bounds)) as app:
            async with client_of(app, await key_of(app, "integrator")) as integrator_b:
                slow_hooks = [
                    await subscribe(integrator_b, f"{slow.url}?endpoint={n}", [ITEM]) for n in range(5)
                ]
            async with client_of(app, await key_of(app, "integrator")) as integrator_a:
                fast_hook = await subscribe(integrator_a, receiver.url, [ITEM])
            published = [await publish(streams, ITEM, demand_line(f"Line {n}")) for n in range(8)]

            async with client_of(app) as staff:

                async def fast_ones_delivered() -> bool:
                    log = await deliveries(staff, fast_hook["id"])
                    return len(log) == len(published) and {d["status"] for d in log} == {"delivered"}

                await wait_until(fast_ones_delivered, timeout=20)
                slow_logs = [await deliveries(staff, hook["id"]) for hook in slow_hooks]
            held_while_fast_finished = sum(slow.waiting.values())
            slow_answered_while_fast_finished = len(slow.received)

            assert slow.hold is not None
            slow.hold.set()  # B's receivers recover: their backlog drains
            await wait_until(lambda: len(slow.received) >= 5 * len(published), timeout=30)
    finally:
        await slow.stop()

    assert sorted(receiver.ids()) == sorted(e.id for e in published)
    # When A had everything, B's attempts were still hanging: none of B's 40 had been answered.
    assert slow_answered_while_fast_finished == 0 and held_while_fast_finished == 2
    assert sum(d["status"] == "pending" for log in slow_logs for d in log) == 5 * len(published)
    # B never had more than one attempt per endpoint, nor more than two in all, in flight.
    assert max(slow.most_waiting.values()) == 1 and slow.most_waiting_in_all == 2
    for n in range(5):
        got = [r.headers["webhook-id"] for r in slow.received if r.query == f"endpoint={n}"]
        assert sorted(got) == sorted(e.id for e in published), n


@pytest.mark.parametrize(
    "host", ["[::ffff:127.0.0.1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "127.0.0.1"]
)
async def test_a_delivery_to_an_address_that_embeds_loopback_is_refused_before_any_connection(
    host: str, gateway_database_url: str
) -> None:
    connections: list[object] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("peername"))
        writer.close()

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    settings = GatewaySettings(
        environment="production",
        api_key_pepper=secrets.token_urlsafe(32),
        internal_secret=secrets.token_urlsafe(32),
        database_url=gateway_database_url,
    )
    box = SecretBox(settings)
    database = Database(gateway_database_url)
    dispatcher = Dispatcher(settings, database, box)
    await dispatcher.start()
    try:
        subscription_id = uuid.uuid4()
        outcome = await dispatcher.attempt(
            Claimed(
                uuid.uuid4(),
                subscription_id,
                uuid.uuid4(),
                "event-1",
                f"https://{host}:{port}/hook",
                box.seal(new_secret(), subscription_id),
                b"{}",
            )
        )
    finally:
        await dispatcher.stop()
        await database.dispose()
        listener.close()
        await listener.wait_closed()
    assert not outcome.delivered and outcome.status_code is None
    assert "not a public address" in (outcome.error or "")
    assert connections == []


async def test_a_stale_line_event_reaches_only_the_webhooks_of_its_own_anchor_and_staff(
    gateway_app: GatewayFactory, streams: str, receiver: Receiver, system: System
) -> None:
    async with gateway_app(upstreams=system.upstreams(), **FAST) as app:
        owner_id, other_id = await system.subject("anchor"), await system.subject("anchor")
        keys = {
            "owner": await key_of(app, "anchor", owner_id),
            "other": await key_of(app, "anchor", other_id),
            "integrator": await key_of(app, "integrator"),
        }
        for who, key in keys.items():
            async with client_of(app, key) as http:
                await subscribe(http, f"{receiver.url}?who={who}", ["demand.item.*"])
        async with client_of(app) as staff:
            await subscribe(staff, f"{receiver.url}?who=staff", ["demand.item.*"])
        line = demand_line("Draft meals")
        stale = await publish(
            streams,
            "demand.item.stale.v1",
            line | {"anchor_id": owner_id, "status": "draft", "visibility": "public", "left_pipeline": True},
            subject=line["demand_id"],
        )
        last = await publish(streams, ITEM, demand_line() | {"anchor_id": other_id})
        await wait_until(
            lambda: len([r for r in receiver.received if r.event["id"] == last.id]) >= 4, timeout=10
        )
        await asyncio.sleep(0.3)
    got = sorted(r.query.removeprefix("who=") for r in receiver.received if r.event["id"] == stale.id)
    assert got == ["owner", "staff"]
