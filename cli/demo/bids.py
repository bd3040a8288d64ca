"""Loading the demo's bids and awards, after its lines and enterprises: what the impact report
and the ``/impact`` page count.

Idempotent like the rest of the load: a bid is looked up by its enterprise and line and made
only when missing; an award is set with ``PUT`` (the same award again changes nothing); an
outcome is recorded only on a bid that has none yet. The anchor's award comes first, so the
enterprise's win is confirmed from both sides.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from cli.client import Gateway, GatewayError
from cli.demo.network import ALL_STATUSES, OTHER_SUPPLIER, Bid, Network

API = "/api/v1"
LINE_WAIT_SECONDS = 30.0  # until the enterprises service has heard of a line just posted


class Tallies(Protocol):
    def tally(self, kind: str, made: bool) -> None: ...


def load_bids(
    gw: Gateway,
    network: Network,
    ids: dict[str, str],
    report: Tallies,
    step: Callable[[str, int], None],
    idempotency: Callable[[str], dict[str, str]],
) -> None:
    line_ids = {
        line["external_ref"]: line["id"]
        for anchor in network.anchors
        for line in gw.pages(
            f"{API}/demand", {"anchor_id": ids[anchor.ref], "visibility": "public", "status": ALL_STATUSES}
        )
    }
    names = {e.ref: e.body["name"] for e in network.enterprises}
    for spec in network.bids:
        step("bids", 1)
        enterprise_id, demand_id = ids[spec.enterprise], line_ids[spec.line]
        bids = {b["demand_id"]: b for b in gw.pages(f"{API}/enterprises/{enterprise_id}/bids")}
        bid = bids.get(demand_id)
        report.tally("bids", bid is None)
        if bid is None:
            bid = _make_bid(
                gw, spec, enterprise_id, demand_id, idempotency(f"bid-{spec.enterprise}-{spec.line}")
            )
        if spec.outcome not in ("won", "lost") or spec.value_pence is None:
            continue
        won = spec.outcome == "won"
        award = {
            "supplier_name": names[spec.enterprise] if won else OTHER_SUPPLIER,
            "enterprise_id": enterprise_id if won else None,
            "contract_value_pence": spec.value_pence,
            "awarded_on": time.strftime("%Y-%m-%d", time.gmtime()),
        }
        current = _award_of(gw, demand_id)
        if current is None:
            gw.put(f"{API}/demand/{demand_id}/award", award)
        report.tally("awards", current is None)
        if bid["status"] in ("intended", "submitted"):
            outcome: dict[str, Any] = {"status": spec.outcome}
            if won:
                outcome["contract_value_pence"] = spec.value_pence
            gw.patch(f"{API}/bids/{bid['id']}", outcome)


def _make_bid(
    gw: Gateway, spec: Bid, enterprise_id: str, demand_id: str, headers: dict[str, str]
) -> dict[str, Any]:
    body = {
        "demand_id": demand_id,
        "role": spec.role,
        "partners": list(spec.partners),
        "status": "intended" if spec.outcome == "intended" else "submitted",
    }
    deadline = time.monotonic() + LINE_WAIT_SECONDS
    while True:
        try:
            return dict(gw.post(f"{API}/enterprises/{enterprise_id}/bids", body, headers=headers))
        except GatewayError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _award_of(gw: Gateway, demand_id: str) -> dict[str, Any] | None:
    try:
        return dict(gw.get(f"{API}/demand/{demand_id}/award"))
    except GatewayError as exc:
        if exc.status == 404:
            return None
        raise
