"""The recorded-history attacker against the real service (Hypothesis stateful test).

Several anchors post, re-value, move, withdraw and import public and aggregate-only lines;
releases happen in between. After each release the attacker records every publication:
several views of ``GET /pipeline`` (groupings and filters, block-aligned or not) and the
``demand.pipeline.published.v1`` events. It knows every public line, so each published
figure gives it the aggregate-only part exactly: a linear equation over the unknown
aggregate-only values (one variable per value a line had in each block it was in: a hidden
line's identity is never published, so a move looks like one line gone and another come).
The auditor here is stronger than a real attacker: it is told which lines each published
figure holds (it matches each anchor's released part of a block, read from the service's
own table, to the live state at a release), and it plays each anchor in turn, substituting
that anchor's own values. With ``scipy.optimize.linprog`` (values >= 0) it solves each
unknown's feasible interval, and each other anchor's contribution to each published block
state, and asserts that none is narrowed to within +/-25% of its true value and no
aggregate-only remainder can come from one anchor alone.

The default run is short; ``SEEDBED_ATTACKER_EXAMPLES`` sets the number of examples, and
the ``long`` test runs a long one (300 examples).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from scipy.optimize import linprog

from services.demand.models import demand_lines, metadata, pipeline_confidential
from services.demand.pipeline import release
from services.demand.pipeline.cells import value_band
from services.demand.settings import DemandSettings
from services.demand.tests.conftest import INTEGRATOR, anchor_principal, line_body, outbox_events
from shared.testing.apps import STAFF, client

T = TypeVar("T")
ANCHORS = 4
BLOCKS = {("55", "2027-Q1"): ("55520000", "2027-02-01"), ("55", "2027-Q2"): ("55520000", "2027-05-01")}
BLOCKS |= {("45", "2027-Q1"): ("45210000", "2027-02-01")}
VALUES = [1_000_000, 2_000_000, 3_000_000, 5_000_000, 7_777_700, 20_000_000]
VIEWS: list[dict[str, str]] = [
    {},
    {"group_by": "cpv_division,quarter"},
    {"group_by": "cpv_division"},
    {"group_by": "quarter"},
    {"cpv": "55", "group_by": "quarter"},
    {"from": "2027-Q2"},
    {"group_by": "cpv_group"},
    {"group_by": "anchor_type"},
    {"group_by": "value_band", "cpv": "55"},
    {"group_by": "quarter", "quarter_of": "contract_start"},
    {"suitable_for_vcse": "true"},
    {"quarter_of": "contract_start", "group_by": "cpv_division"},
]
WITHIN = 0.25
EPS = 1e-6


@dataclass
class Line:
    ref: str
    anchor: int
    aggregate_only: bool
    block: tuple[str, str]
    value: int
    variable: int  # the variable of its current value (a new one per new value)
    open: bool = True
    line_id: str = ""


@dataclass
class Constraint:
    variables: list[int]
    total: int  # the aggregate-only part of the published figure
    what: str


@dataclass
class Ledger:
    """What the attacker recorded, and the truth only the test knows."""

    values: dict[int, int] = field(default_factory=dict)  # variable -> true value
    owner: dict[int, int] = field(default_factory=dict)  # variable -> anchor number
    constraints: list[Constraint] = field(default_factory=list)
    states: list[dict[tuple[str, str], list[int]]] = field(default_factory=list)  # per release


def interval(
    rows: list[Constraint], unknown: list[int], known: dict[int, int], target: dict[int, float]
) -> tuple[float, float] | None:
    """The min and max of sum(target[v] x_v) subject to every row, x >= 0, own values known."""
    index = {v: i for i, v in enumerate(unknown)}
    a_eq, b_eq = [], []
    for row in rows:
        coefficients = np.zeros(len(unknown))
        rest = row.total
        for v in row.variables:
            if v in index:
                coefficients[index[v]] += 1
            else:
                rest -= known[v]
        if coefficients.any():
            a_eq.append(coefficients)
            b_eq.append(rest)
    c = np.zeros(len(unknown))
    for v, weight in target.items():
        c[index[v]] = weight
    bounds = [(0, None)] * len(unknown)
    low = linprog(c, A_eq=np.array(a_eq) if a_eq else None, b_eq=b_eq or None, bounds=bounds, method="highs")
    high = linprog(
        -c, A_eq=np.array(a_eq) if a_eq else None, b_eq=b_eq or None, bounds=bounds, method="highs"
    )
    assert low.status in (0, 3) and high.status in (0, 3), (low.message, high.message)  # 3: unbounded
    return (low.fun if low.status == 0 else 0.0, -high.fun if high.status == 0 else float("inf"))


def narrowed(bounds: tuple[float, float], true: int) -> bool:
    low, high = bounds
    return true > 0 and low >= (1 - WITHIN) * true - EPS and high <= (1 + WITHIN) * true + EPS


def audit(ledger: Ledger) -> None:
    """Play each anchor in turn against everything published; fail on any narrowed value."""
    rows = ledger.constraints
    if not rows:
        return
    for attacker in range(ANCHORS):
        known = {v: value for v, value in ledger.values.items() if ledger.owner[v] == attacker}
        unknown = sorted({v for row in rows for v in row.variables if v not in known})
        if not unknown:
            continue
        for v in unknown:
            bounds = interval(rows, unknown, known, {v: 1.0})
            assert bounds is not None
            assert not narrowed(bounds, ledger.values[v]), (
                f"anchor {attacker} narrows anchor {ledger.owner[v]}'s value {ledger.values[v]} to {bounds}"
            )
        for row in rows:  # each other anchor's contribution to a published figure
            others = defaultdict(list)
            for v in row.variables:
                if v not in known:
                    others[ledger.owner[v]].append(v)
            remainder = row.total - sum(known.get(v, 0) for v in row.variables)
            for anchor, variables in others.items():
                true = sum(ledger.values[v] for v in variables)
                bounds = interval(rows, unknown, known, dict.fromkeys(variables, 1.0))
                assert not narrowed(bounds, true), (
                    f"anchor {attacker} narrows anchor {anchor}'s contribution {true} to {bounds}: {row.what}"
                )
                rest = [v for a, vs in others.items() if a != anchor for v in vs]
                if remainder > 0 and rest:
                    alone = interval(rows, unknown, known, dict.fromkeys(rest, 1.0))
                    assert alone[1] > EPS, f"anchor {attacker} pins {row.what} on anchor {anchor} alone"
                elif remainder > 0:
                    raise AssertionError(
                        f"anchor {attacker} pins {row.what} ({remainder}) on anchor {anchor} alone"
                    )


def attacker_machine(app: FastAPI, settings_: DemandSettings, loop: asyncio.AbstractEventLoop) -> type:
    def run(coroutine: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()  # type: ignore[arg-type]

    async def setup() -> list[str]:
        async with app.state.database.transaction() as session:
            for table in reversed(metadata.sorted_tables):
                if table.name.startswith(("demand_line", "pipeline_")) or table.name == "demand_lines":
                    await session.execute(sa.delete(table))
            await session.execute(sa.text("DELETE FROM outbox"))
        app.state.pipeline_views.clear()
        if not hasattr(app.state, "attack_anchors"):
            async with client(app, STAFF) as http:
                app.state.attack_anchors = [
                    (
                        await http.post("/api/v1/anchors", json={"name": f"Anchor {i}", "type": "police"})
                    ).json()["id"]
                    for i in range(ANCHORS)
                ]
        return list(app.state.attack_anchors)

    class Attacker(RuleBasedStateMachine):
        lines = Bundle("lines")

        def __init__(self) -> None:
            super().__init__()
            self.anchor_ids = run(setup())
            self.ledger = Ledger()
            self.all_lines: list[Line] = []
            self.public_released: dict[str, tuple[tuple[str, str], int]] = {}
            self.seen_events = 0
            self.next_variable = 0
            self.aware = True
            self.block_figures: dict[tuple[str, str], int] = {}
            self.released: dict[tuple[str, str], dict[int, int]] = {}

        def _variable(self, anchor: int, value: int) -> int:
            self.next_variable += 1
            self.ledger.values[self.next_variable] = value
            self.ledger.owner[self.next_variable] = anchor
            return self.next_variable

        def _body(self, line: Line) -> dict[str, Any]:
            code, tender = BLOCKS[line.block]
            return line_body(
                external_ref=line.ref,
                cpv_codes=[code],
                category="works" if code.startswith("45") else "services",
                expected_tender_date=tender,
                contract_start="2027-10-01",
                estimated_value_pence=line.value,
                duration_months=12,
                visibility="aggregate_only" if line.aggregate_only else "public",
            )

        @initialize(
            block=st.sampled_from(sorted(BLOCKS)),
            values=st.lists(st.sampled_from(VALUES), min_size=3, max_size=3),
        )
        def start_with_a_shared_block(self, block: tuple[str, str], values: list[int]) -> None:
            """Three anchors share a block, released: the state an attacker then watches change."""
            for anchor, value in enumerate(values):
                self.post(anchor, True, block, value)
            self.release_and_record()

        @rule(
            target=lines,
            anchor=st.integers(0, ANCHORS - 1),
            aggregate_only=st.booleans(),
            block=st.sampled_from(sorted(BLOCKS)),
            value=st.sampled_from(VALUES),
        )
        def post(self, anchor: int, aggregate_only: bool, block: tuple[str, str], value: int) -> Line:
            line = Line(
                f"P{len(self.all_lines)}", anchor, aggregate_only, block, value, self._variable(anchor, value)
            )

            async def go() -> None:
                async with client(app, anchor_principal(self.anchor_ids[anchor])) as http:
                    response = await http.post("/api/v1/demand", json=self._body(line))
                assert response.status_code == 201, response.text
                line.line_id = response.json()["id"]

            run(go())
            self.all_lines.append(line)
            return line

        @rule(
            anchor=st.integers(0, ANCHORS - 1),
            rows=st.lists(
                st.tuples(st.booleans(), st.sampled_from(sorted(BLOCKS)), st.sampled_from(VALUES)),
                min_size=1,
                max_size=4,
            ),
        )
        def import_lines(self, anchor: int, rows: list[tuple[bool, tuple[str, str], int]]) -> None:
            new = [
                Line(f"I{len(self.all_lines)}-{n}", anchor, ao, block, value, self._variable(anchor, value))
                for n, (ao, block, value) in enumerate(rows)
            ]

            async def go() -> None:
                body = "\n".join(json.dumps(self._body(line)) for line in new)
                async with client(app, STAFF) as http:
                    response = await http.post(
                        "/api/v1/demand/imports",
                        params={"anchor_id": self.anchor_ids[anchor]},
                        content=body.encode(),
                        headers={"Content-Type": "application/x-ndjson"},
                    )
                assert response.status_code == 200, response.text

            run(go())
            self.all_lines.extend(new)

        def _patch(self, line: Line, changes: dict[str, Any]) -> None:
            async def go() -> None:
                if not line.line_id:  # imported: its id from the database
                    async with app.state.database.transaction(write=False) as session:
                        line.line_id = await session.scalar(
                            sa.select(demand_lines.c.id).where(
                                demand_lines.c.external_ref == line.ref,
                                demand_lines.c.anchor_id == self.anchor_ids[line.anchor],
                            )
                        )
                async with client(app, STAFF) as http:
                    response = await http.patch(f"/api/v1/demand/{line.line_id}", json=changes)
                assert response.status_code == 200, response.text

            run(go())

        @precondition(lambda self: any(line.open for line in self.all_lines))
        @rule(data=st.data(), value=st.sampled_from(VALUES))
        def revalue(self, data: st.DataObject, value: int) -> None:
            line = data.draw(st.sampled_from([x for x in self.all_lines if x.open]))
            if value == line.value:
                return
            self._patch(line, {"estimated_value_pence": value})
            line.value = value
            line.variable = self._variable(line.anchor, value)

        @precondition(lambda self: any(line.open for line in self.all_lines))
        @rule(data=st.data(), block=st.sampled_from(sorted(BLOCKS)))
        def move(self, data: st.DataObject, block: tuple[str, str]) -> None:
            line = data.draw(st.sampled_from([x for x in self.all_lines if x.open]))
            code, tender = BLOCKS[block]
            self._patch(
                line,
                {
                    "cpv_codes": [code],
                    "category": "works" if code.startswith("45") else "services",
                    "expected_tender_date": tender,
                },
            )
            line.block = block
            # Nobody but its anchor sees a hidden line move: to the others it is one line gone
            # from one block and another come to the next, so its value is a new unknown (as
            # after a re-value). Linking the two would need the line's identity, never published.
            if line.aggregate_only:
                line.variable = self._variable(line.anchor, line.value)

        @precondition(lambda self: any(line.open for line in self.all_lines))
        @rule(data=st.data())
        def withdraw(self, data: st.DataObject) -> None:
            line = data.draw(st.sampled_from([x for x in self.all_lines if x.open]))
            self._patch(line, {"status": "withdrawn"})
            line.open = False

        @rule()
        def release_and_record(self) -> None:
            run(release.publish_snapshot(app.state.database, settings_, force=True))
            live: dict[tuple[str, str], list[int]] = defaultdict(list)
            for line in self.all_lines:
                if line.open and line.aggregate_only:
                    live[line.block].append(line.variable)
                elif line.open:
                    self.public_released[line.ref] = (line.block, line.value)
                else:
                    self.public_released.pop(line.ref, None)
            self.ledger.states.append(dict(live))
            self.released = run(self._released_parts())
            answers = run(self._observe())
            [by_block] = [
                answer for params, answer in answers if params == {"group_by": "cpv_division,quarter"}
            ]
            self.aware = "confidential" in by_block  # False: the service of before the change rule
            self.block_figures = {}
            for c in by_block["cells"]:
                if not c.get("suppressed"):
                    block = (c["key"]["cpv_division"], c["key"]["quarter"])
                    self.block_figures[block] = c["total_value_pence"] - self._public(
                        lambda b, k=block: b == k
                    )
            for params, answer in answers:
                self._record(params, answer)

        async def _released_parts(self) -> dict[tuple[str, str], dict[int, int]]:
            """Each anchor's aggregate-only value in each block as the service last released it."""
            k = pipeline_confidential.c
            number = {anchor_id: n for n, anchor_id in enumerate(self.anchor_ids)}
            parts: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
            async with app.state.database.transaction(write=False) as session:
                for row in await session.execute(
                    sa.select(k.cpv_division, k.tender_quarter, k.anchor_id, k.value_pence)
                ):
                    parts[(row.cpv_division, row.tender_quarter)][number[row.anchor_id]] = int(
                        row.value_pence
                    )
            return dict(parts)

        async def _observe(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
            async with client(app, INTEGRATOR) as http:
                answers = []
                for params in VIEWS:
                    response = await http.get("/api/v1/pipeline", params=params)
                    assert response.status_code == 200, response.text
                    answers.append((params, response.json()))
            for event in (await outbox_events(app))[self.seen_events :]:
                if event["type"] == "demand.pipeline.published.v1":
                    answers.append(({"event": "1"}, {"cells": [], "totals": event["data"]["totals"]}))
                self.seen_events += 1
            return answers

        def _public(self, inside: Callable[[tuple[str, str]], bool]) -> int:
            return sum(value for block, value in self.public_released.values() if inside(block))

        def _record(self, params: dict[str, str], answer: dict[str, Any]) -> None:
            """Every figure of an answer as equations over the aggregate-only values."""
            group = params.get("group_by", "").split(",") if params.get("group_by") else []
            figures = [(c["key"], c) for c in answer["cells"]] + [(None, answer["totals"])]
            for key, figure in figures:
                if figure.get("suppressed") or figure.get("total_value_pence") is None:
                    continue
                if not self.aware and "value_band" in group:
                    continue  # finer than a block: this auditor reads whole blocks only
                blocks = [b for b in BLOCKS if self._inside(params, group, key, b)]
                public = sum(
                    value
                    for block, value in self.public_released.values()
                    if block in blocks and self._in_band(group, key, value)
                )
                remainder = figure["total_value_pence"] - public
                what = f"{params} {key}"
                if figure.get("confidential_included") is False:
                    assert remainder == 0, f"{what}: a figure said to be public-only holds {remainder}"
                    continue
                self.ledger.constraints.append(Constraint(self._released(blocks), remainder, what))
                note(f"published {what}: aggregate-only part {remainder}")

        @staticmethod
        def _in_band(group: list[str], key: dict[str, Any] | None, value: int) -> bool:
            return key is None or "value_band" not in group or key["value_band"] == value_band(value)

        def _inside(
            self, params: dict[str, str], group: list[str], key: dict[str, Any] | None, block: tuple[str, str]
        ) -> bool:
            division, quarter = block
            if params.get("cpv") and params["cpv"] != division:
                return False
            if params.get("from") and quarter < params["from"]:
                return False
            if params.get("suitable_for_vcse") == "false":
                return False
            if key is None:
                return True
            for dim, value in key.items():
                if dim == "cpv_division" and value != division:
                    return False
                if dim == "cpv_group" and value[:2] != division:
                    return False
                if dim == "quarter" and params.get("quarter_of") != "contract_start" and value != quarter:
                    return False
            return True

        def _released(self, blocks: list[tuple[str, str]]) -> list[int]:
            """The aggregate-only values a figure over these blocks holds: each block as the
            service last released it (the auditor is told which state: matched by value)."""
            return [v for b in blocks for v in self._state_of(b)]

        def _state_of(self, block: tuple[str, str]) -> list[int]:
            if block not in self.block_figures:
                # Not shown: empty or never included (or, before the change rule, suppressed:
                # then everything live was released at once).
                return [] if self.aware else self.ledger.states[-1].get(block, [])
            wanted = self.block_figures[block]
            if wanted == 0:
                return []  # values are positive: nothing of the block is included
            # Matched anchor by anchor: two states can share a total ({1M, 1M, 1M} and {2M, 1M}).
            parts = self.released.get(block, {})
            assert sum(parts.values()) == wanted, f"block {block}: published {wanted}, released {parts}"
            for state in reversed(self.ledger.states):
                members = state.get(block, [])
                by_anchor: dict[int, int] = defaultdict(int)
                for v in members:
                    by_anchor[self.ledger.owner[v]] += self.ledger.values[v]
                if by_anchor == parts:
                    return members
            raise AssertionError(f"block {block}: released {parts}, matching no state ever live")

        def teardown(self) -> None:
            audit(self.ledger)

    return Attacker


async def attack(app: FastAPI, settings_: DemandSettings, examples: int) -> None:
    loop = asyncio.get_running_loop()
    machine = attacker_machine(app, settings_, loop)
    machine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=14,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    await asyncio.to_thread(run_state_machine_as_test, machine, settings=machine.TestCase.settings)


async def test_recorded_history_never_narrows_an_aggregate_only_value(
    app: FastAPI, settings: DemandSettings
) -> None:
    await attack(app, settings, int(os.environ.get("SEEDBED_ATTACKER_EXAMPLES", "6")))


@pytest.mark.long
async def test_recorded_history_never_narrows_an_aggregate_only_value_long_run(
    app: FastAPI, settings: DemandSettings
) -> None:
    await attack(app, settings, int(os.environ.get("SEEDBED_ATTACKER_EXAMPLES", "300")))
