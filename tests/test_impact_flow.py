"""Closing the loop through the gateway: an anchor posts a line, an incubated enterprise gets
ready, bids and wins, the anchor awards it, and the impact report counts the win where it
belongs; bids stay confidential to each role.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.testing.system import System
from tests.conftest import API, MentoringClock, book, created, enterprise_body, line_body, mentor_body, poll
from tests.test_flows import anchor_with_key, key, ok

PLI = "public_liability_insurance"


async def make_tender_ready(own: httpx.AsyncClient, staff: httpx.AsyncClient, enterprise_id: str) -> None:
    """The enterprise submits every milestone its overall readiness asks for, staff verify each
    and move its stage."""
    gaps = (await staff.get(f"{API}/enterprises/{enterprise_id}/readiness")).json()["gaps"]
    for gap in gaps:
        body: dict[str, Any] = {"status": "submitted", "evidence": {"reference": f"REF-{gap['code'][:8]}"}}
        if gap.get("required_value_pence"):
            body["value_pence"] = gap["required_value_pence"]
        url = f"{API}/enterprises/{enterprise_id}/milestones/{gap['code']}"
        assert (await own.patch(url, json=body)).status_code == 200
        verified = await staff.patch(url, json={"status": "verified"})
        assert verified.status_code == 200, verified.text
    moved = await staff.patch(f"{API}/enterprises/{enterprise_id}", json={"stage": "tender_ready"})
    assert moved.status_code == 200, moved.text


async def bid(http: httpx.AsyncClient, enterprise_id: str, demand_id: str, **extra: Any) -> dict[str, Any]:
    body = {"demand_id": demand_id, "role": "lead", "status": "submitted"} | extra
    # The enterprises service knows the line once it has heard the demand service's event.
    answer = await poll(
        lambda: http.post(f"{API}/enterprises/{enterprise_id}/bids", json=body),
        lambda r: r.status_code != 404,
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def change_bid(http: httpx.AsyncClient, bid_id: str, **changes: Any) -> dict[str, Any]:
    answer = await http.patch(f"{API}/bids/{bid_id}", json=changes)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_win_from_line_to_award_is_counted_in_the_impact_report(
    system: System, mentoring_clock: MentoringClock
) -> None:
    tag = uuid.uuid4().hex[:6]
    today = datetime.now(UTC).date()
    anchor_id, anchor_key = await anchor_with_key(system, tag)
    other_anchor_id, other_anchor_key = await anchor_with_key(system, f"{tag}-other")
    async with system.client() as staff:
        cohort = await created(
            staff,
            "/cohorts",
            {
                "name": f"Spring {tag}",
                "programme": "Tender readiness",
                "start_date": (today - timedelta(days=30)).isoformat(),
                "end_date": (today + timedelta(days=150)).isoformat(),
            },
        )
        winner = await created(
            staff, "/enterprises", enterprise_body(f"Good Food CIC {tag}", cohort_id=cohort["id"])
        )
        loser = await created(
            staff, "/enterprises", enterprise_body(f"Fair Meals CIC {tag}", cohort_id=cohort["id"])
        )
        mentor = await created(staff, "/mentors", mentor_body(f"Insurance Mentor {tag}", ["insurance"]))
    winner_key = await key(system, "enterprise", winner["id"])
    loser_key = await key(system, "enterprise", loser["id"])
    async with system.client(anchor_key) as buyer:
        meals = await created(
            buyer, "/demand", line_body(anchor_id, f"School meals {tag}", requirements=[{"code": PLI}])
        )
        # A line nobody bid for: in the pipeline's value, not in what was bid for.
        await created(
            buyer, "/demand", line_body(anchor_id, f"Catering {tag}", estimated_value_pence=8_000_000)
        )
    async with system.client(other_anchor_key) as other_buyer:
        elsewhere = await created(other_buyer, "/demand", line_body(other_anchor_id, f"Cafe {tag}"))

    # An hour of mentoring on a milestone, completed before the win.
    async with system.client() as staff:
        session = await book(staff, mentor["id"], winner["id"], timedelta(hours=2), milestone_code=PLI)
    mentoring_clock.set(datetime.fromisoformat(session["start"]) - datetime.now(UTC) + timedelta(minutes=65))
    async with system.client(await key(system, "mentor", mentor["id"])) as mentor_http:
        done = await mentor_http.post(
            f"{API}/sessions/{session['id']}/complete", json={"outcome": "Policy read"}
        )
        assert done.status_code == 200, done.text

    async with system.client() as staff, system.client(winner_key) as own:
        await make_tender_ready(own, staff, winner["id"])
    async with system.client(winner_key) as own:
        winning = await bid(own, winner["id"], meals["id"])
        assert winning["open_gaps"] == [] and winning["ready"] is True
        await bid(own, winner["id"], elsewhere["id"], status="intended")
    async with system.client(loser_key) as own:
        losing = await bid(
            own, loser["id"], meals["id"], role="consortium_member", partners=["Leeds Bakers Ltd"]
        )
        assert losing["ready"] is False and losing["open_gaps"], losing  # bidding unready is allowed, shown

    # Bids are confidential: another enterprise and the anchor (before its award) see nothing.
    async with system.client(loser_key) as own:
        assert (await own.get(f"{API}/bids/{winning['id']}")).status_code == 404
    async with system.client(anchor_key) as buyer:
        assert (await buyer.get(f"{API}/bids/{winning['id']}")).status_code == 404
        awarded = await buyer.put(
            f"{API}/demand/{meals['id']}/award",
            json={
                "supplier_name": winner["name"],
                "enterprise_id": winner["id"],
                "contract_value_pence": 11_500_000,
                "awarded_on": today.isoformat(),
            },
        )
        assert awarded.status_code in (200, 201), awarded.text

    async with system.client(winner_key) as own:
        await change_bid(own, winning["id"], status="won", contract_value_pence=11_500_000)
        confirmed = await poll(
            lambda: own.get(f"{API}/bids/{winning['id']}"),
            lambda r: ok(r) and r.json()["award_check"] == "confirmed",
        )
        assert confirmed.json()["status"] == "won"
    async with system.client(loser_key) as own:
        await change_bid(own, losing["id"], status="lost")

    # After its award, the anchor sees the bids on its own line, and never another anchor's.
    async with system.client(anchor_key) as buyer:
        assert (await buyer.get(f"{API}/bids/{winning['id']}")).status_code == 200
    async with system.client(other_anchor_key) as other_buyer:
        assert (await other_buyer.get(f"{API}/bids/{winning['id']}")).status_code == 404

    scope = {
        "cohort_id": cohort["id"],
        "anchor_id": anchor_id,
        "cpv_division": "55",
        "start": today.isoformat(),
        "end": today.isoformat(),
    }
    async with system.client() as staff:
        report = (
            await poll(
                lambda: staff.get(f"{API}/reports/impact", params=scope),
                lambda r: (
                    ok(r)
                    and r.json()["totals"]["bids_lost"] == 1
                    and r.json()["totals"]["mentoring_hours_before_wins"] > 0
                ),
            )
        ).json()
        totals = report["totals"]
        # A direct count over this test's own data.
        assert totals["enterprises"] == 2
        assert totals["reached_tender_ready"] == 1 and totals["median_days_to_tender_ready"] == 30
        assert (totals["bids_submitted"], totals["bids_won"], totals["bids_lost"]) == (2, 1, 1)
        assert totals["win_rate"] == 0.5 and totals["value_won_pence"] == 11_500_000
        assert (totals["wins_confirmed"], totals["wins_disputed"], totals["awards_unrecorded"]) == (1, 0, 0)
        assert totals["pipeline_value_pence"] == 12_000_000 + 8_000_000
        assert totals["pipeline_value_bid_pence"] == totals["pipeline_value_won_pence"] == 12_000_000
        assert totals["share_won"] == 0.6
        assert totals["mentoring_hours_before_wins"] == 1.0
        assert report["won_from"] == [{"anchor_id": anchor_id, "wins": 1, "value_won_pence": 11_500_000}]

        # The same win is nowhere else: another period, another anchor, another CPV division.
        yesterday = (today - timedelta(days=1)).isoformat()
        for other in (
            {"start": yesterday, "end": yesterday},
            {"anchor_id": other_anchor_id},
            {"cpv_division": "45"},
        ):
            answer = await staff.get(f"{API}/reports/impact", params=scope | other)
            assert answer.status_code == 200, answer.text
            assert answer.json()["totals"]["bids_won"] == 0, other

        by_cohort = await staff.get(f"{API}/reports/impact", params={**scope, "group_by": "cohort"})
        assert [(g["key"], g["label"]) for g in by_cohort.json()["groups"]] == [
            (cohort["id"], cohort["name"])
        ]

        download = await staff.get(f"{API}/reports/impact.csv", params=scope)
        assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
        [row] = [r for r in csv.DictReader(io.StringIO(download.text)) if r["group"] == "total"]
        assert (row["bids_won"], row["value_won_pence"]) == ("1", "11500000")

        # An unknown cohort is named, not answered with empty figures.
        unknown = await staff.get(f"{API}/reports/impact", params={"cohort_id": str(uuid.uuid4())})
        assert unknown.status_code == 422 and "cohort_id" in unknown.text

    # Anyone but staff gets only the shareable, unfiltered report; enterprises not even that.
    async with system.client(await key(system, "integrator")) as integrator:
        narrowed = await integrator.get(
            f"{API}/reports/impact", params={"cohort_id": cohort["id"], "shareable": "true"}
        )
        assert narrowed.status_code == 403 and "cohort_id" in narrowed.text
        shared = await integrator.get(
            f"{API}/reports/impact", params={"shareable": "true", "group_by": "cohort"}
        )
        assert shared.status_code == 200, shared.text
        for group in shared.json()["groups"]:
            figures = group["figures"]
            assert figures["enterprises_bidding"] in (None, 0) or figures["enterprises_bidding"] >= 3
    async with system.client(anchor_key) as buyer:
        assert (await buyer.get(f"{API}/reports/impact")).status_code == 403  # the full one is staff's
    async with system.client(winner_key) as own:
        assert (await own.get(f"{API}/reports/impact", params={"shareable": "true"})).status_code == 403
