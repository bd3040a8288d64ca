"""Faults during a flow, on a system of this module's own (its parts are stopped and started):
a consumer that was down catches up with no event lost, and writes go through while NATS is
down (the outbox keeps their events) and their events arrive once it is back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from shared.testing.databases import DatabaseFactory
from shared.testing.system import System
from tests.conftest import (
    API,
    boot,
    created,
    enterprise_body,
    ids,
    line_body,
    mentor_body,
    poll,
    stream_messages,
)

pytestmark = pytest.mark.slow  # faults: servers paused, killed and restarted (seconds each)

PLI = "public_liability_insurance"


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, _database_factory_sync: DatabaseFactory
) -> Iterator[System]:
    with boot(tmp_path_factory.mktemp("faults"), _database_factory_sync) as (booted, _clock):
        yield booted


async def anchor_and_line(system: System, tag: str, **line: object) -> tuple[str, str]:
    """A public line of a new anchor: (the anchor's key, the line's id)."""
    async with system.client() as staff:
        anchor = await created(
            staff, "/anchors", {"name": f"Fault anchor {tag}", "type": "housing_association"}
        )
        made = await created(staff, "/demand", line_body(anchor["id"], f"Fault meals {tag}", **line))
    return str((await system.create_key("anchor", anchor["id"]))["key"]), made["id"]


async def test_the_demand_read_model_catches_up_with_what_happened_while_it_was_down(system: System) -> None:
    tag = uuid.uuid4().hex[:6]
    anchor_key, line_id = await anchor_and_line(system, tag)
    demand = system.services["demand"]
    demand.stop()
    try:
        async with system.client() as staff:
            down = await staff.get(f"{API}/demand/{line_id}")
            assert down.status_code == 503 and "demand" in down.text, down.text
            made = [
                (await created(staff, "/enterprises", enterprise_body(f"While down {n} {tag}")))["id"]
                for n in range(3)
            ]
            renamed = await staff.patch(f"{API}/enterprises/{made[0]}", json={"name": f"Renamed {tag}"})
            assert renamed.status_code == 200, renamed.text
    finally:
        demand.start()
        demand.wait_ready("/readyz")

    async with system.client(anchor_key) as buyer:
        answer = await poll(
            lambda: buyer.get(f"{API}/demand/{line_id}/candidates"),
            # Every enterprise made while it was down, and the rename that came after (the
            # events arrive in order; the rename is the last of them).
            lambda r: (
                set(made) <= set(ids(r, "enterprise_id"))
                and {c["enterprise_id"]: c["name"] for c in r.json()["items"]}[made[0]] == f"Renamed {tag}"
            ),
        )
    names = {c["enterprise_id"]: c["name"] for c in answer.json()["items"]}
    assert names[made[0]] == f"Renamed {tag}"  # the later version won
    enterprise_key = (await system.create_key("enterprise", made[1]))["key"]
    async with system.client(enterprise_key) as own:
        matches = await own.get(f"{API}/enterprises/{made[1]}/matches")
    assert line_id in ids(matches, "demand_id")


async def test_writes_succeed_while_nats_is_down_and_their_events_arrive_once_it_is_back(
    system: System,
) -> None:
    tag = uuid.uuid4().hex[:6]
    before = await stream_messages(system.nats.url)
    system.nats.kill()
    try:
        async with system.client() as staff:
            anchor = await created(staff, "/anchors", {"name": f"Offline anchor {tag}", "type": "university"})
            line = await created(
                staff,
                "/demand",
                line_body(
                    anchor["id"], f"Offline meals {tag}", requirements=[{"code": PLI, "min_value_pence": 1}]
                ),
            )
            enterprise = await created(staff, "/enterprises", enterprise_body(f"Offline CIC {tag}"))
            mentor = await created(staff, "/mentors", mentor_body(f"Offline Mentor {tag}", ["insurance"]))
            # Nothing can have crossed yet: the enterprises service has not heard of the line.
            unknown = await staff.get(
                f"{API}/enterprises/{enterprise['id']}/readiness", params={"demand_id": line["id"]}
            )
            assert unknown.status_code == 404, unknown.text
    finally:
        system.nats.start()
        await system.nats.wait_jetstream()

    async with system.client() as staff:
        await poll(
            lambda: staff.get(
                f"{API}/enterprises/{enterprise['id']}/readiness", params={"demand_id": line["id"]}
            ),
            lambda r: r.status_code == 200 and r.json()["required"] == [PLI],
        )
        await poll(
            lambda: staff.get(f"{API}/demand/{line['id']}/candidates"),
            lambda r: enterprise["id"] in ids(r, "enterprise_id"),
        )
        answer = await poll(
            lambda: staff.get(f"{API}/mentors/recommendations", params={"enterprise_id": enterprise["id"]}),
            lambda r: r.status_code == 200 and PLI in r.json()["open_milestones"],
        )
        assert mentor["id"] in [item["mentor_id"] for item in answer.json()["items"]]

    # Each event of those writes is stored once, none of the earlier ones again.
    after = await stream_messages(system.nats.url)
    earlier = {m.event["id"] for m in before}
    new = [m for m in after if m.event["id"] not in earlier]
    assert len(after) == len(before) + len(new)
    about = {
        "demand.anchor.registered.v1": anchor["id"],
        "demand.item.published.v1": line["id"],
        "enterprises.enterprise.registered.v1": enterprise["id"],
        "mentoring.mentor.registered.v1": mentor["id"],
    }
    for kind, subject in about.items():
        assert [m.event["subject"] for m in new if m.subject == kind].count(subject) == 1, kind
