"""Matching: the enterprise read model fed by real events on NATS, matches and candidates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from services.demand import matching
from services.demand.tests.conftest import (
    INTEGRATOR,
    MENTOR,
    anchor_principal,
    enterprise_principal,
    line_body,
)
from shared.events import CONTENT_TYPE, new_event, stream_for
from shared.inbox import dead_letters_table
from shared.nats import ensure_stream
from shared.testing.apps import STAFF, client
from shared.testing.polling import wait_until

FUTURE = (datetime.now(UTC) + timedelta(days=200)).isoformat()
PAST = (datetime.now(UTC) - timedelta(days=2)).isoformat()


def enterprise_snapshot(enterprise_id: str, version: int, **overrides: Any) -> dict[str, Any]:
    """The payload of enterprises.enterprise.*.v1 exactly as docs/EVENTS.md lists it."""
    data = {
        "enterprise_id": enterprise_id,
        "version": version,
        "name": "Chapeltown Community Kitchen CIC",
        "legal_form": "cic_limited_by_guarantee",
        "stage": "incubating",
        "cohort_id": None,
        "postcode": "LS7 3HB",
        "cpv_codes": ["55520000"],
        "max_contract_value_pence": 60_000_000,
        "employees": 12,
        "turnover_pence": 45_000_000,
        "vcse": True,
        "size_class": "small",
    }
    return data | overrides


def readiness(enterprise_id: str, version: int, verified: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "enterprise_id": enterprise_id,
        "version": version,
        "score": 0.5,
        "ready": False,
        "missing": ["cyber_essentials"],
        "expiring_soon": [],
        "verified": verified,
    }


class Enterprises:
    """Publishes the enterprises service's events to the real nats-server."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> Enterprises:
        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        await ensure_stream(self.js, stream_for("enterprises"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def publish(self, event_type: str, data: dict[str, Any]) -> None:
        event = new_event(
            event_type, data, source="/seedbed/enterprises", subject=str(data.get("enterprise_id"))
        )
        await self.js.publish(
            event_type, event.to_bytes(), headers={"Nats-Msg-Id": event.id, "Content-Type": CONTENT_TYPE}
        )

    async def register(self, data: dict[str, Any]) -> None:
        await self.publish("enterprises.enterprise.registered.v1", data)


async def matches(app: FastAPI, enterprise_id: str, principal: Any = STAFF) -> Any:
    async with client(app, principal) as http:
        return await http.get(f"/api/v1/enterprises/{enterprise_id}/matches")


async def known(
    app: FastAPI, enterprise_id: str, version: int = 1, readiness_version: int | None = None
) -> None:
    from services.demand.models import match_enterprises, match_readiness

    async def check() -> bool:
        async with app.state.database.transaction(write=False) as session:
            found = await session.scalar(
                sa.select(match_enterprises.c.version).where(
                    match_enterprises.c.enterprise_id == enterprise_id
                )
            )
            ready = await session.scalar(
                sa.select(match_readiness.c.version).where(match_readiness.c.enterprise_id == enterprise_id)
            )
        return found == version and (readiness_version is None or ready == readiness_version)

    await wait_until(check, timeout=20)


async def post(app: FastAPI, anchor_id: str, **overrides: Any) -> dict[str, Any]:
    async with client(app, anchor_principal(anchor_id)) as http:
        response = await http.post("/api/v1/demand", json=line_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def test_enterprise_sees_public_open_lines_it_could_bid_for_with_its_gaps(
    app: FastAPI, nats_url: str, new_anchor
) -> None:
    anchor = await new_anchor()
    a = anchor["id"]
    pli = [{"code": "public_liability_insurance", "min_value_pence": 500_000_000}]
    best = await post(
        app, a, requirements=pli, delivery_area={"label": "Leeds", "postcode_districts": ["LS7"]}
    )
    gap = await post(app, a, requirements=[*pli, {"code": "cyber_essentials"}])
    short_cover = await post(
        app, a, requirements=[{"code": "public_liability_insurance", "min_value_pence": 2_000_000_000}]
    )
    division_only = await post(app, a, cpv_codes=["55300000"])
    await post(app, a, visibility="aggregate_only")
    await post(app, a, status="draft")
    cancelled = await post(app, a)
    await post(app, a, cpv_codes=["45000000"], category="works")
    async with client(app, anchor_principal(a)) as http:
        await http.patch(f"/api/v1/demand/{cancelled['id']}", json={"status": "cancelled"})
    enterprise_id = str(uuid.uuid4())
    async with Enterprises(nats_url) as enterprises:
        await enterprises.register(enterprise_snapshot(enterprise_id, 1))
        await enterprises.publish(
            "enterprises.readiness.changed.v1",
            readiness(
                enterprise_id,
                1,
                [{"code": "public_liability_insurance", "expires_at": FUTURE, "value_pence": 1_000_000_000}],
            ),
        )
    await known(app, enterprise_id, 1, readiness_version=1)
    response = await matches(app, enterprise_id, enterprise_principal(enterprise_id))
    assert response.status_code == 200
    items = response.json()["items"]
    assert [i["demand_id"] for i in items][:1] == [best["id"]]
    by_id = {i["demand_id"]: i for i in items}
    assert set(by_id) == {best["id"], gap["id"], short_cover["id"], division_only["id"]}
    assert by_id[best["id"]]["gaps"] == [] and by_id[best["id"]]["parts"]["location"] == 1.0
    assert by_id[gap["id"]]["gaps"] == ["cyber_essentials"]
    assert by_id[short_cover["id"]]["gaps"] == ["public_liability_insurance"]
    assert by_id[division_only["id"]]["parts"]["cpv"] == 0.25
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)


async def test_stale_and_repeated_events_are_dropped_by_version(
    app: FastAPI, nats_url: str, new_anchor
) -> None:
    anchor = await new_anchor()
    line = await post(app, anchor["id"], delivery_area={"label": "Bradford", "postcode_areas": ["BD"]})
    enterprise_id = str(uuid.uuid4())
    async with Enterprises(nats_url) as enterprises:
        await enterprises.register(enterprise_snapshot(enterprise_id, 1, postcode="LS7 3HB"))
        await enterprises.publish(
            "enterprises.enterprise.updated.v1", enterprise_snapshot(enterprise_id, 3, postcode="BD1 1AA")
        )
        stale = enterprise_snapshot(enterprise_id, 2, postcode="LS7 3HB")
        await enterprises.publish("enterprises.enterprise.updated.v1", stale)
        await enterprises.publish(
            "enterprises.enterprise.stage_changed.v1",
            enterprise_snapshot(enterprise_id, 4, postcode="BD1 1AA", stage="tender_ready")
            | {"from_stage": "incubating", "to_stage": "tender_ready"},
        )
        await enterprises.publish(
            "enterprises.readiness.changed.v1",
            readiness(
                enterprise_id,
                2,
                [{"code": "public_liability_insurance", "expires_at": FUTURE, "value_pence": 10**10}],
            ),
        )
        await enterprises.publish(
            "enterprises.readiness.changed.v1", readiness(enterprise_id, 1, [])
        )  # stale
    await known(app, enterprise_id, 4, readiness_version=2)
    [item] = (await matches(app, enterprise_id)).json()["items"]
    assert item["demand_id"] == line["id"]
    assert item["parts"]["location"] == 0.9  # the BD postcode of version 3, not the stale LS one
    assert item["gaps"] == []  # readiness version 2 kept; the stale version 1 (nothing verified) dropped
    async with client(app, anchor_principal(anchor["id"])) as http:
        [candidate] = (await http.get(f"/api/v1/demand/{line['id']}/candidates")).json()["items"]
    assert candidate["stage"] == "tender_ready"


async def test_expired_or_insufficient_evidence_is_a_gap(app: FastAPI, nats_url: str, new_anchor) -> None:
    anchor = await new_anchor()
    line = await post(
        app,
        anchor["id"],
        requirements=[
            {"code": "public_liability_insurance", "min_value_pence": 500_000_000},
            {"code": "cyber_essentials"},
            {"code": "safeguarding_policy"},
        ],
    )
    enterprise_id = str(uuid.uuid4())
    async with Enterprises(nats_url) as enterprises:
        await enterprises.register(enterprise_snapshot(enterprise_id, 1))
        await enterprises.publish(
            "enterprises.readiness.changed.v1",
            readiness(
                enterprise_id,
                1,
                [
                    {"code": "public_liability_insurance", "expires_at": FUTURE, "value_pence": 100_000_000},
                    {"code": "cyber_essentials", "expires_at": PAST, "value_pence": None},
                    {"code": "safeguarding_policy", "expires_at": None, "value_pence": None},
                ],
            ),
        )
    await known(app, enterprise_id, 1, readiness_version=1)
    [item] = (await matches(app, enterprise_id)).json()["items"]
    assert item["demand_id"] == line["id"]
    assert item["gaps"] == ["public_liability_insurance", "cyber_essentials"]
    assert item["parts"]["readiness"] == pytest.approx(1 / 3, abs=1e-3)


async def test_who_may_read_matches(app: FastAPI, nats_url: str, new_anchor) -> None:
    enterprise_id = str(uuid.uuid4())
    async with Enterprises(nats_url) as enterprises:
        await enterprises.register(enterprise_snapshot(enterprise_id, 1))
    await known(app, enterprise_id)
    anchor = await new_anchor()
    assert (await matches(app, enterprise_id, STAFF)).status_code == 200
    assert (await matches(app, enterprise_id, MENTOR)).status_code == 200
    assert (await matches(app, enterprise_id, enterprise_principal(enterprise_id))).status_code == 200
    assert (await matches(app, enterprise_id, enterprise_principal(str(uuid.uuid4())))).status_code == 404
    assert (await matches(app, enterprise_id, anchor_principal(anchor["id"]))).status_code == 404
    assert (await matches(app, enterprise_id, INTEGRATOR)).status_code == 403
    assert (await matches(app, str(uuid.uuid4()), STAFF)).status_code == 404


async def test_anchor_sees_which_incubated_enterprises_could_bid_for_its_line(
    app: FastAPI, nats_url: str, new_anchor
) -> None:
    owner, other = await new_anchor(), await new_anchor()
    line = await post(
        app, owner["id"], estimated_value_pence=100_000_000, requirements=[{"code": "case_studies"}]
    )
    secret = await post(app, owner["id"], visibility="aggregate_only")
    kitchen, caterer, applicant, builder = (str(uuid.uuid4()) for _ in range(4))
    async with Enterprises(nats_url) as enterprises:
        await enterprises.register(
            enterprise_snapshot(kitchen, 1, name="Kitchen", max_contract_value_pence=200_000_000)
        )
        await enterprises.register(
            enterprise_snapshot(caterer, 1, name="Caterer", stage="tender_ready", vcse=False)
        )
        await enterprises.register(enterprise_snapshot(applicant, 1, name="Applicant", stage="applicant"))
        await enterprises.register(enterprise_snapshot(builder, 1, name="Builder", cpv_codes=["45000000"]))
        await enterprises.publish(
            "enterprises.readiness.changed.v1", readiness(kitchen, 1, [{"code": "case_studies"}])
        )
    for enterprise_id in (kitchen, caterer, applicant, builder):
        await known(app, enterprise_id)
    await known(app, kitchen, readiness_version=1)
    async with client(app, anchor_principal(owner["id"])) as http:
        response = await http.get(f"/api/v1/demand/{line['id']}/candidates")
        hidden = await http.get(f"/api/v1/demand/{secret['id']}/candidates")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(i["name"], i["gaps"]) for i in items] == [("Kitchen", []), ("Caterer", ["case_studies"])]
    assert items[0]["parts"]["capacity"] == 1.0 and items[1]["parts"]["capacity"] < 1.0
    assert hidden.status_code == 200  # its own aggregate-only line: only it sees the answer
    async with client(app, anchor_principal(other["id"])) as http:
        assert (await http.get(f"/api/v1/demand/{line['id']}/candidates")).status_code == 403
        assert (await http.get(f"/api/v1/demand/{secret['id']}/candidates")).status_code == 404
    async with client(app, enterprise_principal(kitchen)) as http:
        assert (await http.get(f"/api/v1/demand/{line['id']}/candidates")).status_code == 403


async def test_a_poison_event_is_dead_lettered_and_the_rest_flow(app: FastAPI, nats_url: str) -> None:
    good = str(uuid.uuid4())
    async with Enterprises(nats_url) as enterprises:
        await enterprises.publish("enterprises.enterprise.registered.v1", {"version": 1, "name": "No id"})
        await enterprises.register(enterprise_snapshot(good, 1))
    await known(app, good)

    async def dead_lettered() -> bool:
        async with app.state.database.transaction(write=False) as session:
            return bool(await session.scalar(sa.select(sa.func.count()).select_from(dead_letters_table)))

    await wait_until(dead_lettered)


def test_cpv_fit_by_prefix() -> None:
    assert matching.cpv_fit(["55500000"], ["55520000-1"]) == 1.0  # supplies the whole group
    assert matching.cpv_fit(["55521200"], ["55500000"]) == 0.9  # the line asks for the branch
    assert matching.cpv_fit(["55521100"], ["55521200"]) == 0.8  # same category (5 digits)
    assert matching.cpv_fit(["55521000"], ["55524000"]) == 0.7  # same class (4 digits)
    assert matching.cpv_fit(["55510000"], ["55520000"]) == 0.5  # same group
    assert matching.cpv_fit(["55310000"], ["55520000"]) == 0.25  # same division
    assert matching.cpv_fit(["45000000"], ["55520000"]) == 0
    assert matching.cpv_fit(["45000000", "55520000"], ["55520000"]) == 1.0


def test_capacity_location_and_suitability() -> None:
    assert matching.capacity_fit(100, 100, []) == 1.0
    assert matching.capacity_fit(100, 300, [90]) == 0.85
    assert matching.capacity_fit(100, 400, [200]) == 0.25
    assert matching.capacity_fit(None, 400, []) == 0.6
    area = {"label": "Leeds", "postcode_areas": ["BD"], "postcode_districts": ["LS6"]}
    assert matching.location_fit("LS6 2QR", area) == 1.0
    assert matching.location_fit("bd1 1aa", area) == 0.9
    assert matching.location_fit("LS1 4AP", area) == 0.6
    assert matching.location_fit("M1 1AE", area) == 0.1
    assert matching.location_fit(None, area) == 0.5
    assert matching.location_fit("M1 1AE", None) == 0.8
    assert matching.suitability_fit(True, "micro", True, True) == 1.0
    assert matching.suitability_fit(False, "small", True, True) == 0.9
    assert matching.suitability_fit(False, "large", True, True) == 0.3
    assert matching.suitability_fit(False, "large", False, False) == 0.5
