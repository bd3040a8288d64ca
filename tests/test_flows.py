"""End-to-end flows through the gateway of the whole running system, as its users see them.

Each flow makes its own anchors, enterprises and mentors (names tagged per test) and calls the
gateway with the keys of the roles that would act: staff, an anchor, an enterprise, a mentor,
an integrator. What crosses services by events is polled for.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.tests.webhook_receiver import Receiver, read_until, sse_events
from shared.testing.polling import wait_until
from shared.testing.system import System
from tests.conftest import (
    API,
    MentoringClock,
    book,
    created,
    enterprise_body,
    ids,
    line_body,
    mentor_body,
    poll,
    stream_messages,
    submit,
)

PLI = "public_liability_insurance"
MILLION = 100_000_000  # one million pounds, in pence


def ok(response: httpx.Response) -> bool:
    return response.status_code == 200


async def key(system: System, role: str, subject_id: str | None = None) -> str:
    return str((await system.create_key(role, subject_id))["key"])


async def anchor_with_key(system: System, tag: str) -> tuple[str, str]:
    async with system.client() as staff:
        anchor = await created(
            staff, "/anchors", {"name": f"Leeds City Council {tag}", "type": "local_authority"}
        )
    return anchor["id"], await key(system, "anchor", anchor["id"])


async def enterprise_with_key(system: System, tag: str, **changes: Any) -> tuple[str, str]:
    async with system.client() as staff:
        enterprise = await created(staff, "/enterprises", enterprise_body(f"Good Food CIC {tag}", **changes))
    return enterprise["id"], await key(system, "enterprise", enterprise["id"])


async def test_a_registered_enterprise_reaches_demand_matching_and_mentoring_recommendations(
    system: System,
) -> None:
    tag = uuid.uuid4().hex[:6]
    anchor_id, anchor_key = await anchor_with_key(system, tag)
    async with system.client() as staff:
        insurer = await created(staff, "/mentors", mentor_body(f"Insurance Mentor {tag}", ["insurance"]))
        coder = await created(staff, "/mentors", mentor_body(f"Digital Mentor {tag}", ["digital"]))
    async with system.client(anchor_key) as buyer:
        line = await created(buyer, "/demand", line_body(anchor_id, f"School meals {tag}"))
    enterprise_id, enterprise_key = await enterprise_with_key(system, tag)

    async with system.client(anchor_key) as buyer:
        answer = await poll(
            lambda: buyer.get(f"{API}/demand/{line['id']}/candidates"),
            lambda r: enterprise_id in ids(r, "enterprise_id"),
        )
    [candidate] = [c for c in answer.json()["items"] if c["enterprise_id"] == enterprise_id]
    assert candidate["name"] == f"Good Food CIC {tag}" and candidate["stage"] == "incubating"
    assert candidate["parts"]["cpv"] == 1.0 and candidate["score"] > 0.5

    async with system.client(enterprise_key) as own:
        answer = await poll(
            lambda: own.get(f"{API}/enterprises/{enterprise_id}/matches"),
            lambda r: ok(r) and line["id"] in ids(r, "demand_id"),
        )
        [match] = [m for m in answer.json()["items"] if m["demand_id"] == line["id"]]
        assert match["title"] == f"School meals {tag}" and match["anchor_id"] == anchor_id

        # Mentoring heard of the enterprise and of its open milestones (readiness.changed).
        answer = await poll(
            lambda: own.get(f"{API}/mentors/recommendations", params={"enterprise_id": enterprise_id}),
            lambda r: ok(r) and r.json()["enterprise_known"] and PLI in r.json()["open_milestones"],
        )
    ranked = [item["mentor_id"] for item in answer.json()["items"]]
    assert insurer["id"] in ranked and coder["id"] in ranked
    assert ranked.index(insurer["id"]) < ranked.index(coder["id"])
    [mine] = [item for item in answer.json()["items"] if item["mentor_id"] == insurer["id"]]
    assert PLI in mine["covered_milestones"]


async def test_the_requirements_of_a_demand_line_decide_readiness_against_it(system: System) -> None:
    tag = uuid.uuid4().hex[:6]
    anchor_id, anchor_key = await anchor_with_key(system, tag)
    enterprise_id, enterprise_key = await enterprise_with_key(system, tag)
    async with system.client(anchor_key) as buyer:
        line = await created(
            buyer,
            "/demand",
            line_body(anchor_id, f"Meals {tag}", requirements=[{"code": PLI, "min_value_pence": MILLION}]),
        )
        strict = await created(
            buyer,
            "/demand",
            line_body(
                anchor_id, f"Big meals {tag}", requirements=[{"code": PLI, "min_value_pence": 5 * MILLION}]
            ),
        )

    def readiness(http: httpx.AsyncClient, demand_id: str) -> Callable[[], Awaitable[httpx.Response]]:
        return lambda: http.get(
            f"{API}/enterprises/{enterprise_id}/readiness", params={"demand_id": demand_id}
        )

    def gaps(response: httpx.Response) -> dict[str, dict[str, Any]]:
        return {gap["code"]: gap for gap in response.json()["gaps"]}

    async with system.client(enterprise_key) as own, system.client() as staff:
        answer = await poll(readiness(own, line["id"]), ok)  # the enterprises service heard of the line
        body = answer.json()
        assert body["demand_id"] == line["id"] and body["required"] == [PLI]
        assert body["ready"] is False and gaps(answer)[PLI]["reason"] == "not_started"

        await submit(own, enterprise_id, PLI, value_pence=2 * MILLION)
        assert gaps(await readiness(own, line["id"])())[PLI]["reason"] == "submitted"
        verified = await staff.patch(
            f"{API}/enterprises/{enterprise_id}/milestones/{PLI}", json={"status": "verified"}
        )
        assert verified.status_code == 200, verified.text

        answer = await readiness(own, line["id"])()
        assert answer.json()["ready"] is True and answer.json()["gaps"] == [], answer.text
        answer = await poll(readiness(own, strict["id"]), ok)
        assert answer.json()["ready"] is False
        assert gaps(answer)[PLI] == {
            "code": PLI,
            "reason": "below_threshold",
            "required_value_pence": 5 * MILLION,
            "value_pence": 2 * MILLION,
        }

        # The demand service's matches tell the same story (it heard readiness.changed).
        def match_gaps(response: httpx.Response) -> dict[str, list[str]]:
            return {m["demand_id"]: m["gaps"] for m in response.json()["items"]}

        answer = await poll(
            lambda: own.get(f"{API}/enterprises/{enterprise_id}/matches"),
            lambda r: (
                ok(r) and match_gaps(r).get(line["id"]) == [] and match_gaps(r).get(strict["id"]) == [PLI]
            ),
        )

    # A change of the line's requirements reaches readiness (demand.item.updated).
    async with system.client(anchor_key) as buyer:
        changed = await buyer.patch(
            f"{API}/demand/{line['id']}",
            json={"requirements": [{"code": PLI, "min_value_pence": 3 * MILLION}]},
        )
        assert changed.status_code == 200, changed.text
    async with system.client(enterprise_key) as own:
        await poll(readiness(own, line["id"]), lambda r: ok(r) and r.json()["ready"] is False)


async def test_a_mentor_signing_off_a_submitted_milestone_in_a_session_verifies_it(
    system: System, mentoring_clock: MentoringClock
) -> None:
    tag = uuid.uuid4().hex[:6]
    enterprise_id, enterprise_key = await enterprise_with_key(system, tag)
    async with system.client() as staff:
        mentor = await created(
            staff, "/mentors", mentor_body(f"Insurance Mentor {tag}", ["insurance", "legal"])
        )
        session = await book(staff, mentor["id"], enterprise_id, timedelta(hours=2), milestone_code=PLI)
    mentor_key = await key(system, "mentor", mentor["id"])
    async with system.client(enterprise_key) as own:
        await submit(own, enterprise_id, PLI, value_pence=2 * MILLION)

    # An hour and a bit later (the mentoring service's clock), the session has taken place.
    start = datetime.fromisoformat(session["start"])
    mentoring_clock.set(start - datetime.now(UTC) + timedelta(minutes=5))
    async with system.client(mentor_key) as mentor_http:
        done = await mentor_http.post(
            f"{API}/sessions/{session['id']}/complete",
            json={"outcome": "Policy checked", "signed_off_milestones": [PLI, "legal_entity"]},
        )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"

    async with system.client() as staff:
        answer = await poll(
            lambda: staff.get(f"{API}/enterprises/{enterprise_id}/milestones/{PLI}"),
            lambda r: ok(r) and r.json()["status"] == "verified",
        )
        assert answer.json()["verified_by"]["role"] == "mentor"
        assert mentor["id"] in str(answer.json()["verified_by"]), answer.json()["verified_by"]
        # legal_entity was not submitted: the sign-off is only noted, the milestone is unchanged.
        legal = await staff.get(f"{API}/enterprises/{enterprise_id}/milestones/legal_entity")
        assert legal.json()["status"] == "not_started"
        history = await staff.get(
            f"{API}/enterprises/{enterprise_id}/history", params={"milestone_code": "legal_entity"}
        )
        assert "mentor_sign_off_noted" in [entry["action"] for entry in history.json()["items"]], history.text
        # ...and the mentoring service hears that the milestone is no longer open.
        await poll(
            lambda: staff.get(f"{API}/mentors/recommendations", params={"enterprise_id": enterprise_id}),
            lambda r: ok(r) and PLI not in r.json()["open_milestones"] and r.json()["open_milestones"],
        )


async def test_the_dashboard_shows_profile_readiness_matches_and_the_upcoming_session(system: System) -> None:
    tag = uuid.uuid4().hex[:6]
    anchor_id, anchor_key = await anchor_with_key(system, tag)
    async with system.client(anchor_key) as buyer:
        line = await created(buyer, "/demand", line_body(anchor_id, f"Dashboard meals {tag}"))
    enterprise_id, enterprise_key = await enterprise_with_key(system, tag)
    async with system.client() as staff:
        mentor = await created(staff, "/mentors", mentor_body(f"Dashboard Mentor {tag}", ["insurance"]))
        session = await book(staff, mentor["id"], enterprise_id, timedelta(days=1))

    async with system.client(enterprise_key) as own:
        answer = await poll(
            lambda: own.get(f"{API}/enterprises/{enterprise_id}/dashboard"),
            lambda r: (
                ok(r)
                and line["id"]
                in [m["demand_id"] for m in r.json()["top_matches"].get("data", {}).get("items", [])]
            ),
        )
    body = answer.json()
    assert body["unavailable"] == []
    assert body["profile"]["data"]["name"] == f"Good Food CIC {tag}"
    assert PLI in body["readiness"]["data"]["missing"]
    assert [s["id"] for s in body["upcoming_sessions"]["data"]["items"]] == [session["id"]]
    assert body["upcoming_sessions"]["data"]["items"][0]["mentor_id"] == mentor["id"]


async def test_an_aggregate_only_line_never_reaches_anyone_but_its_anchor(system: System) -> None:
    tag = uuid.uuid4().hex[:6]
    owner_id, owner_key = await anchor_with_key(system, tag)
    _, other_key = await anchor_with_key(system, f"other {tag}")
    enterprise_id, enterprise_key = await enterprise_with_key(system, tag)
    integrator_key = await key(system, "integrator")
    receiver = await Receiver().start()
    try:
        async with system.client(integrator_key) as integrator:
            hook = await integrator.post(f"{API}/webhooks", json={"url": receiver.url, "types": ["demand.*"]})
            assert hook.status_code == 201, hook.text
        async with system.client(owner_key) as owner:
            hidden = await created(
                owner, "/demand", line_body(owner_id, f"Secret meals {tag}", visibility="aggregate_only")
            )
            shown = await created(owner, "/demand", line_body(owner_id, f"Open meals {tag}"))
            # The owner sees its own aggregate-only line.
            assert (await owner.get(f"{API}/demand/{hidden['id']}")).status_code == 200
        secrets_ = (hidden["id"], f"Secret meals {tag}")

        def leaks(text: str) -> list[str]:
            return [secret for secret in secrets_ if secret in text]

        # Events: the public line's event is delivered, nothing ever names the hidden one.
        await poll_receiver(receiver, shown["id"])
        assert not leaks(b"".join(r.body for r in receiver.received).decode())
        for stream_key in (integrator_key, other_key, system.staff_key):
            seen = await sse_until(system, stream_key, shown["id"])
            assert not leaks(seen), stream_key
        assert not leaks(b"".join(m.body for m in await stream_messages(system.nats.url)).decode())

        # The API, as everyone but the owner and staff.
        for reader in (other_key, integrator_key, enterprise_key):
            async with system.client(reader) as http:
                listed = await http.get(f"{API}/demand", params={"limit": 500})
                assert shown["id"] in ids(listed) and hidden["id"] not in ids(listed)
                assert (await http.get(f"{API}/demand/{hidden['id']}")).status_code == 404
                ocds = await http.get(f"{API}/demand/ocds")
                assert ocds.status_code == 200 and shown["id"] in ocds.text and not leaks(ocds.text)
                pipeline = await http.get(f"{API}/pipeline")
                assert pipeline.status_code == 200 and not leaks(pipeline.text)
        async with system.client(enterprise_key) as own:
            matches = await poll(
                lambda: own.get(f"{API}/enterprises/{enterprise_id}/matches", params={"limit": 100}),
                lambda r: ok(r) and shown["id"] in ids(r, "demand_id"),
            )
            assert not leaks(matches.text)
            readiness = await own.get(
                f"{API}/enterprises/{enterprise_id}/readiness", params={"demand_id": hidden["id"]}
            )
            assert readiness.status_code == 404
        async with system.client(other_key) as other:
            assert (await other.get(f"{API}/demand/{hidden['id']}/candidates")).status_code == 404
    finally:
        await receiver.stop()


async def poll_receiver(receiver: Receiver, text: str, timeout: float = 15.0) -> None:
    await wait_until(lambda: any(text.encode() in r.body for r in receiver.received), timeout=timeout)


async def sse_until(system: System, key_: str, text: str) -> str:
    """Everything the event stream gives ``key_`` from its first event until one mentions ``text``."""
    headers = {"Authorization": f"Bearer {key_}"}
    async with (
        httpx.AsyncClient(base_url=system.url, timeout=httpx.Timeout(30.0)) as http,
        http.stream("GET", f"{API}/events/stream", params={"since": 0}, headers=headers) as response,
    ):
        assert response.status_code == 200, (await response.aread()).decode()
        events = await read_until(sse_events(response), lambda seen: text in str(seen[-1].data))
    return "\n".join(str(event.data) for event in events)
