"""Awards of demand lines (``demand.item.awarded.v1``) joined with the bids on them: the same
``award_check`` whatever order the award and the bids come in, repeated or stale awards changing
nothing, the supplier found by registration number, and the line's fields the impact report
reads kept from the demand events."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from nats.js import JetStreamContext

from services.enterprises.models import demand_lines
from services.enterprises.tests.conftest import (
    award,
    create_bid,
    create_enterprise,
    deliver,
    outbox_events,
    public_line,
)
from services.enterprises.tests.test_consumers import publish
from shared.events import stream_for
from shared.nats import ensure_stream
from shared.testing.polling import wait_until

AWARDED = "demand.item.awarded.v1"


async def stored_line(app: FastAPI, demand_id: str) -> Any:
    async with app.state.database.transaction(write=False) as session:
        query = sa.select(demand_lines).where(demand_lines.c.demand_id == uuid.UUID(demand_id))
        return (await session.execute(query)).first()


async def bid_of(staff: httpx.AsyncClient, bid_id: str) -> dict[str, Any]:
    response = await staff.get(f"/api/v1/bids/{bid_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def bid_events(app: FastAPI) -> list[dict[str, Any]]:
    return [e["data"] for e in await outbox_events(app) if e["type"] == "enterprises.bid.changed.v1"]


# The truth in the end: the line was awarded (version 3) to the winner, who recorded the win;
# the runner-up lost. An older award (version 2, to the runner-up) and a repeat may come too.
STEPS = ("award_v3", "award_v2", "winner_bids", "runner_up_bids")
ORDERS = [
    ("award_v3", "winner_bids", "runner_up_bids"),
    ("winner_bids", "runner_up_bids", "award_v3"),
    ("award_v3", "award_v3", "winner_bids", "runner_up_bids", "award_v3"),
    ("winner_bids", "award_v3", "runner_up_bids", "award_v2"),
    ("award_v2", "runner_up_bids", "winner_bids", "award_v3", "award_v2"),
    *itertools.islice(itertools.permutations(STEPS), 3, 24, 7),
]


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
async def test_the_award_check_is_the_same_whatever_order_the_award_and_bids_come_in(
    app: FastAPI, staff: httpx.AsyncClient, order: tuple[str, ...]
) -> None:
    winner, runner_up = await create_enterprise(staff), await create_enterprise(staff)
    line = public_line(str(uuid.uuid4()))
    demand_id, anchor_id = line["demand_id"], line["anchor_id"]
    await deliver(app, "demand.item.published.v1", line)
    bids: dict[str, str] = {}

    async def bid(enterprise: dict[str, Any], outcome: dict[str, Any]) -> None:
        made = await create_bid(staff, enterprise["id"], demand_id, status="submitted")
        changed = await staff.patch(f"/api/v1/bids/{made['id']}", json=outcome)
        assert changed.status_code == 200, changed.text
        bids[enterprise["id"]] = made["id"]

    for step in order:
        if step == "award_v3":
            await deliver(app, AWARDED, award(demand_id, 3, anchor_id=anchor_id, enterprise_id=winner["id"]))
        elif step == "award_v2":
            await deliver(
                app, AWARDED, award(demand_id, 2, anchor_id=anchor_id, enterprise_id=runner_up["id"])
            )
        elif step == "winner_bids":
            await bid(winner, {"status": "won", "contract_value_pence": 45_000_000})
        else:
            await bid(runner_up, {"status": "lost"})

    assert (await bid_of(staff, bids[winner["id"]]))["award_check"] == "confirmed"
    assert (await bid_of(staff, bids[runner_up["id"]]))["award_check"] == "not_awarded"
    kept = await stored_line(app, demand_id)
    assert (kept.award_version, kept.awarded_enterprise_id) == (3, uuid.UUID(winner["id"]))
    # Every version of each bid was announced, the award check's own changes included.
    for bid_id in bids.values():
        versions = [e["version"] for e in await bid_events(app) if e["bid_id"] == bid_id]
        assert versions == list(range(1, (await bid_of(staff, bid_id))["version"] + 1))


async def test_an_award_that_changes_a_check_makes_a_version_a_system_history_row_and_an_event(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    line = public_line(str(uuid.uuid4()))
    await deliver(app, "demand.item.published.v1", line)
    bid = await create_bid(staff, enterprise["id"], line["demand_id"], status="submitted")
    url = f"/api/v1/bids/{bid['id']}"
    await staff.patch(url, json={"status": "won", "contract_value_pence": 45_000_000})
    awarded = award(line["demand_id"], 2, anchor_id=line["anchor_id"], enterprise_id=str(uuid.uuid4()))
    awarded["supplier_name"] = "Someone Else Ltd"
    await deliver(app, AWARDED, awarded)
    after = await bid_of(staff, bid["id"])
    assert (after["award_check"], after["version"]) == ("disputed", 3)
    last = (await staff.get(f"{url}/history")).json()["items"][-1]
    assert last["actor"] == {"role": "system", "actor": "demand-award", "subject_id": None}
    assert (last["version"], last["award_check"], last["status"]) == (3, "disputed", "won")
    assert "Someone Else Ltd" in last["note"]
    event = (await bid_events(app))[-1]
    assert (event["version"], event["award_check"], event["status"]) == (3, "disputed", "won")

    # The same award again, or an older one, changes nothing; the enterprise correcting itself does.
    await deliver(app, AWARDED, awarded)
    await deliver(
        app, AWARDED, award(line["demand_id"], 1, anchor_id=line["anchor_id"], enterprise_id=enterprise["id"])
    )
    assert (await bid_of(staff, bid["id"]))["version"] == 3
    corrected = (await staff.patch(url, json={"status": "lost"})).json()
    assert (corrected["award_check"], corrected["version"]) == ("not_awarded", 4)
    assert len(await bid_events(app)) == 4


@pytest.mark.parametrize(
    ("legal_form", "registered", "as_awarded"),
    [
        ("company_limited_by_shares", "01234567", " 1234567 "),
        ("company_limited_by_guarantee", "SC123456", "sc 123456"),
        ("charity", "1099001", "1099001"),
    ],
)
async def test_an_award_names_the_enterprise_registered_under_the_suppliers_number(
    app: FastAPI, staff: httpx.AsyncClient, legal_form: str, registered: str, as_awarded: str
) -> None:
    enterprise = await create_enterprise(staff, legal_form=legal_form, registration_number=registered)
    bystander = await create_enterprise(staff)
    line = public_line(str(uuid.uuid4()))
    await deliver(app, "demand.item.published.v1", line)
    bid = await create_bid(staff, enterprise["id"], line["demand_id"], status="submitted")
    # The demand service does not know the enterprise's id here: a made-up one, then the number.
    awarded = award(
        line["demand_id"],
        2,
        anchor_id=line["anchor_id"],
        enterprise_id=str(uuid.uuid4()),
        registration_number=as_awarded,
    )
    await deliver(app, AWARDED, awarded)
    assert (await bid_of(staff, bid["id"]))["award_check"] == "awaiting_outcome"
    kept = await stored_line(app, line["demand_id"])
    assert kept.awarded_enterprise_id == uuid.UUID(enterprise["id"])
    assert kept.awarded_registration_number == "".join(as_awarded.split()).upper()
    other_bid = await create_bid(staff, bystander["id"], line["demand_id"])
    assert other_bid["award_check"] == "not_awarded"


async def test_an_award_to_a_supplier_unknown_here_names_no_enterprise(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    line = public_line(str(uuid.uuid4()))
    await deliver(
        app, AWARDED, award(line["demand_id"], 4, anchor_id=line["anchor_id"], registration_number="99999999")
    )
    # A line first heard of through its award is kept; its published event fills it in.
    kept = await stored_line(app, line["demand_id"])
    assert (kept.award_version, kept.awarded_enterprise_id, kept.version) == (4, None, 0)
    await deliver(app, "demand.item.published.v1", line)
    bid = await create_bid(staff, enterprise["id"], line["demand_id"])
    assert bid["award_check"] == "not_awarded"
    assert bid["open_gaps"][0]["code"] == "public_liability_insurance"
    kept = await stored_line(app, line["demand_id"])
    assert (kept.award_version, kept.version, kept.title) == (4, 1, line["title"])


async def test_the_line_keeps_what_the_impact_report_reads(app: FastAPI) -> None:
    line = public_line(str(uuid.uuid4()))
    first = datetime(2027, 1, 4, 9, tzinfo=UTC)
    update = line | {"version": 2, "estimated_value_pence": 50_000_000, "delivery_area": "Leeds"}
    # The update comes first: the earlier published event's time is still the first publication.
    await deliver(app, "demand.item.updated.v1", update, time=first + timedelta(days=3))
    await deliver(app, "demand.item.published.v1", line, time=first)
    await deliver(
        app, AWARDED, award(line["demand_id"], 3, anchor_id=line["anchor_id"], value_pence=49_000_000)
    )
    kept = await stored_line(app, line["demand_id"])
    assert {
        "anchor_id": kept.anchor_id,
        "estimated_value_pence": kept.estimated_value_pence,
        "cpv_codes": kept.cpv_codes,
        "delivery_area": kept.delivery_area,
        "first_published_at": kept.first_published_at,
        "awarded_supplier_name": kept.awarded_supplier_name,
        "awarded_value_pence": kept.awarded_value_pence,
        "awarded_on": kept.awarded_on.isoformat(),
        "award_version": kept.award_version,
    } == {
        "anchor_id": uuid.UUID(line["anchor_id"]),
        "estimated_value_pence": 50_000_000,
        "cpv_codes": ["55524000-9"],
        "delivery_area": "Leeds",
        "first_published_at": first,
        "awarded_supplier_name": "Green Clean Leeds CIC",
        "awarded_value_pence": 49_000_000,
        "awarded_on": "2027-07-15",
        "award_version": 3,
    }
    await deliver(app, "demand.item.updated.v1", line | {"version": 4})
    assert (await stored_line(app, line["demand_id"])).delivery_area == "North Leeds"


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    """JetStream on the test server, with the demand service's stream."""
    nc = await nats.connect(nats_url)
    jetstream = nc.jetstream()
    await ensure_stream(jetstream, stream_for("demand"))
    yield jetstream
    await nc.close()


async def test_the_demand_consumer_joins_an_award_sent_on_nats_once_however_often_it_comes(
    app: FastAPI, staff: httpx.AsyncClient, js: JetStreamContext
) -> None:
    enterprise = await create_enterprise(staff)
    line = public_line(str(uuid.uuid4()))
    demand_id = line["demand_id"]
    await publish(js, "demand.item.published.v1", line, demand_id)
    url = f"/api/v1/enterprises/{enterprise['id']}/readiness"

    async def known() -> bool:
        return (await staff.get(url, params={"demand_id": demand_id})).status_code == 200

    await wait_until(known)
    bid = await create_bid(staff, enterprise["id"], demand_id, status="submitted")
    won = {"status": "won", "contract_value_pence": 45_000_000}
    assert (await staff.patch(f"/api/v1/bids/{bid['id']}", json=won)).status_code == 200
    awarded = award(demand_id, 2, anchor_id=line["anchor_id"], enterprise_id=enterprise["id"])
    event_id = await publish(js, AWARDED, awarded, demand_id)
    await publish(js, AWARDED, awarded, demand_id, event_id=event_id)  # redelivered
    await publish(js, AWARDED, awarded, demand_id)  # sent again under a new id

    async def confirmed() -> bool:
        consumer = next(c for c in app.state.runtime.consumers if c.spec.durable == "enterprises-demand")
        return (
            consumer.processed_total == 3 and (await bid_of(staff, bid["id"]))["award_check"] == "confirmed"
        )

    await wait_until(confirmed)
    assert (await bid_of(staff, bid["id"]))["version"] == 3
    assert [e["award_check"] for e in await bid_events(app)] == [None, None, "confirmed"]
