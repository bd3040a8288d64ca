"""The attacker against the real service, through the API (property-based).

Hypothesis generates demand lines from several anchors, public and aggregate-only,
imports them, publishes a snapshot and asks for several views of the pipeline
(any grouping, any filter). The attacker then knows every public line (from
``GET /demand``) and every published figure, so for each published figure it
knows the aggregate-only part exactly (published minus public): one linear
equation over the unknown aggregate-only totals of the fine cells. Whatever
it can add and subtract is the row space of those equations.

The test checks, with the ground truth it generated:
- every published figure is right (count, value, distinct anchors): public lines, plus
  the aggregate-only lines of the blocks (CPV division x tender quarter) that pass the
  rule when the figure says ``confidential_included`` (nothing is suppressed any more:
  confidential demand that cannot be shown is left out);
- no set of fine cells whose aggregate-only lines come from fewer than k
  anchors, or are dominated by one anchor, has a total in that row space:
  no value left out is recoverable, and none narrows to a single anchor.

The row space is computed exactly (modulo a prime larger than any minor of a
0/1 matrix of this size) and every subset of the aggregate-only cells is tried.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from services.demand.models import metadata
from services.demand.tests.conftest import INTEGRATOR
from shared.testing.apps import STAFF, client

K = 3
DOMINANCE = 0.8
PRIME = (1 << 61) - 1
MAX_AO_CELLS = 12

ANCHOR_TYPES = ["local_authority", "local_authority", "nhs_trust", "nhs_trust", "university", "police"]
CPV = ["55520000", "55310000", "45210000", "45110000", "79410000"]
QUARTERS = [date(2027, 2, 1), date(2027, 5, 1), date(2027, 8, 1)]
VALUES = [500_000, 2_000_000, 5_000_000, 20_000_000, 200_000_000]
AREAS: list[dict[str, Any] | None] = [
    {"label": "Leeds", "postcode_areas": ["LS"]},
    {"label": "Bradford", "postcode_districts": ["BD1", "BD3"]},
    None,
]
DIMS = (
    "cpv_division",
    "cpv_group",
    "quarter",
    "anchor_type",
    "value_band",
    "suitable_for_vcse",
    "suitable_for_sme",
    "delivery_area",
)


@dataclass(frozen=True)
class Line:
    anchor: int
    aggregate_only: bool
    cpv: str
    tender: date
    start_offset_months: int
    value: int
    vcse: bool
    sme: bool
    area: int
    status: str

    def body(self, ref: str) -> dict[str, Any]:
        start = date(self.tender.year, self.tender.month + self.start_offset_months, 1)
        body = {
            "external_ref": ref,
            "title": f"Line {ref}",
            "cpv_codes": [self.cpv],
            "estimated_value_pence": self.value,
            "category": "works" if self.cpv.startswith("45") else "services",
            "expected_tender_date": self.tender.isoformat(),
            "contract_start": start.isoformat(),
            "duration_months": 12,
            "suitable_for_vcse": self.vcse,
            "suitable_for_sme": self.sme,
            "status": self.status,
            "visibility": "aggregate_only" if self.aggregate_only else "public",
        }
        if AREAS[self.area] is not None:
            body["delivery_area"] = AREAS[self.area]
        return body


def quarter(day: date) -> str:
    return f"{day.year}-Q{(day.month - 1) // 3 + 1}"


def band(pence: int) -> str:
    pounds = pence / 100
    for upper, name in (
        (30_000, "0-30k"),
        (100_000, "30k-100k"),
        (250_000, "100k-250k"),
        (1_000_000, "250k-1m"),
    ):
        if pounds < upper:
            return name
    return "1m-5m" if pounds < 5_000_000 else "5m+"


def area_key(area: dict[str, Any] | None) -> str:
    if not area:
        return "anywhere"
    areas = set(area.get("postcode_areas") or []) | {
        d.rstrip("0123456789") for d in area.get("postcode_districts") or []
    }
    return areas.pop() if len(areas) == 1 else "multiple" if areas else "anywhere"


def cell_of(line: dict[str, Any], anchor_type: str) -> dict[str, Any]:
    """The attacker's own reading of where a line counts (from the public fields)."""
    code = line["cpv_codes"][0]
    return {
        "cpv_division": code[:2],
        "cpv_group": code[:3],
        "tender_quarter": quarter(date.fromisoformat(line["expected_tender_date"])),
        "start_quarter": quarter(date.fromisoformat(line["contract_start"])),
        "anchor_type": anchor_type,
        "value_band": band(line["estimated_value_pence"]),
        "suitable_for_vcse": line["suitable_for_vcse"],
        "suitable_for_sme": line["suitable_for_sme"],
        "delivery_area": area_key(line.get("delivery_area")),
    }


@dataclass(frozen=True)
class View:
    group_by: tuple[str, ...]
    quarter_of: str
    filters: tuple[tuple[str, Any], ...]

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"quarter_of": self.quarter_of}
        if self.group_by:
            params["group_by"] = ",".join(self.group_by)
        for name, value in self.filters:
            params[name] = str(value).lower() if isinstance(value, bool) else value
        return params

    def value(self, cell: dict[str, Any], dim: str) -> Any:
        if dim == "quarter":
            return cell["tender_quarter" if self.quarter_of == "tender" else "start_quarter"]
        return cell[dim]

    def selects(self, cell: dict[str, Any]) -> bool:
        for name, wanted in self.filters:
            if name == "from" and self.value(cell, "quarter") < wanted:
                return False
            if name == "to" and self.value(cell, "quarter") > wanted:
                return False
            if name == "cpv" and cell["cpv_division"] != wanted and cell["cpv_group"] != wanted:
                return False
            if (
                name in ("anchor_type", "value_band", "delivery_area", "suitable_for_vcse")
                and cell[name] != wanted
            ):
                return False
        return True

    def key(self, cell: dict[str, Any]) -> dict[str, Any]:
        return {dim: self.value(cell, dim) for dim in self.group_by}


filters = st.lists(
    st.one_of(
        st.tuples(st.just("from"), st.sampled_from([quarter(q) for q in QUARTERS])),
        st.tuples(st.just("to"), st.sampled_from([quarter(q) for q in QUARTERS])),
        st.tuples(st.just("cpv"), st.sampled_from(["55", "45", "79", "555", "452"])),
        st.tuples(st.just("anchor_type"), st.sampled_from(sorted(set(ANCHOR_TYPES)))),
        st.tuples(st.just("value_band"), st.sampled_from(["0-30k", "30k-100k", "100k-250k"])),
        st.tuples(st.just("suitable_for_vcse"), st.booleans()),
    ),
    max_size=2,
    unique_by=lambda f: f[0],
).filter(lambda fs: dict(fs).get("from", "") <= dict(fs).get("to", "9"))
views = st.builds(
    View,
    group_by=st.lists(st.sampled_from(DIMS), max_size=3, unique=True).map(tuple),
    quarter_of=st.sampled_from(["tender", "contract_start"]),
    filters=filters.map(tuple),
)
lines = st.builds(
    Line,
    anchor=st.integers(0, len(ANCHOR_TYPES) - 1),
    aggregate_only=st.booleans(),
    cpv=st.sampled_from(CPV),
    tender=st.sampled_from(QUARTERS),
    start_offset_months=st.sampled_from([1, 4]),
    value=st.sampled_from(VALUES),
    vcse=st.booleans(),
    sme=st.booleans(),
    area=st.integers(0, len(AREAS) - 1),
    status=st.sampled_from(["planned", "planned", "tendering", "draft"]),
)


def nullspace_mod_p(rows: list[list[int]], width: int) -> list[list[int]]:
    """A basis of {x : A x = 0} over GF(p); equal in rank to the rational one for these 0/1 matrices."""
    matrix = [[v % PRIME for v in row] for row in rows]
    pivots: list[int] = []
    rank = 0
    for column in range(width):
        pivot = next((r for r in range(rank, len(matrix)) if matrix[r][column]), None)
        if pivot is None:
            continue
        matrix[rank], matrix[pivot] = matrix[pivot], matrix[rank]
        inverse = pow(matrix[rank][column], PRIME - 2, PRIME)
        matrix[rank] = [v * inverse % PRIME for v in matrix[rank]]
        for r in range(len(matrix)):
            if r != rank and matrix[r][column]:
                factor = matrix[r][column]
                matrix[r] = [(a - factor * b) % PRIME for a, b in zip(matrix[r], matrix[rank], strict=True)]
        pivots.append(column)
        rank += 1
    basis = []
    for free in (c for c in range(width) if c not in pivots):
        vector = [0] * width
        vector[free] = 1
        for r, column in enumerate(pivots):
            vector[column] = -matrix[r][free] % PRIME
        basis.append(vector)
    return basis


def unsafe(contributions: dict[int, int]) -> bool:
    if not contributions:
        return False
    total = sum(contributions.values())
    return len(contributions) < K or (total > 0 and max(contributions.values()) > DOMINANCE * total)


async def reset(app: FastAPI) -> None:
    """Forget every line and release (anchors stay) between examples."""
    async with app.state.database.transaction() as session:
        for table in reversed(metadata.sorted_tables):
            if table.name.startswith(("demand_line", "pipeline_")):
                await session.execute(sa.delete(table))
        await session.execute(sa.text("DELETE FROM outbox"))
    app.state.pipeline_views.clear()


async def anchors_of(app: FastAPI) -> list[dict[str, Any]]:
    """The test's anchors, registered once per app (examples share the app)."""
    if not hasattr(app.state, "attack_anchors"):
        async with client(app, STAFF) as http:
            app.state.attack_anchors = [
                (await http.post("/api/v1/anchors", json={"name": f"Anchor {i}", "type": kind})).json()
                for i, kind in enumerate(ANCHOR_TYPES)
            ]
    return list(app.state.attack_anchors)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    generated=st.lists(lines, min_size=3, max_size=22).filter(
        lambda ls: sum(1 for x in ls if x.aggregate_only and x.status != "draft") <= MAX_AO_CELLS
    ),
    asked=st.lists(views, min_size=4, max_size=7),
)
async def test_attacker_never_recovers_an_aggregate_only_value_or_narrows_it_to_one_anchor(
    app: FastAPI, refresh, generated: list[Line], asked: list[View]
) -> None:
    if True:
        anchors = await anchors_of(app)
        await reset(app)
        by_anchor: dict[int, list[str]] = defaultdict(list)
        for n, line in enumerate(generated):
            by_anchor[line.anchor].append(json.dumps(line.body(f"L{n}")))
        async with client(app, STAFF) as http:
            for index, rows in by_anchor.items():
                response = await http.post(
                    "/api/v1/demand/imports",
                    params={"anchor_id": anchors[index]["id"]},
                    content="\n".join(rows).encode(),
                    headers={"Content-Type": "application/x-ndjson"},
                )
                assert response.status_code == 200, response.text
        await refresh()

        # What the attacker knows: the public lines and the anchors' types.
        types = {a["id"]: a["type"] for a in anchors}
        public: list[tuple[dict[str, Any], str, int]] = []
        async with client(app, INTEGRATOR) as http:
            page = (await http.get("/api/v1/demand", params={"limit": 500})).json()
            answers = [
                (view, (await http.get("/api/v1/pipeline", params=view.params())).json())
                for view in [View((), "tender", ()), *asked]
            ]
        assert page["next_cursor"] is None
        for item in page["items"]:
            if item["status"] in ("planned", "tendering"):
                public.append(
                    (
                        cell_of(item, types[item["anchor_id"]]),
                        item["anchor_id"],
                        item["estimated_value_pence"],
                    )
                )

        # The ground truth, which only the test knows.
        secret: list[tuple[dict[str, Any], str, int]] = []
        for line in generated:
            if line.aggregate_only and line.status != "draft":
                anchor = anchors[line.anchor]
                secret.append((cell_of(line.body("x"), anchor["type"]), anchor["id"], line.value))
        # One snapshot: a block (CPV division, tender quarter) is released when its
        # aggregate-only lines pass the static rule (no earlier state to change from).
        block_values: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for c, anchor_id, value in secret:
            block_values[(c["cpv_division"], c["tender_quarter"])][anchor_id] += value
        released_blocks = {b for b, per_anchor in block_values.items() if not unsafe(dict(per_anchor))}
        secret = [s for s in secret if (s[0]["cpv_division"], s[0]["tender_quarter"]) in released_blocks]
        cells: list[str] = sorted({json.dumps(c, sort_keys=True) for c, _, _ in secret})
        index_of = {c: i for i, c in enumerate(cells)}
        per_cell: list[dict[int, int]] = [defaultdict(int) for _ in cells]
        anchor_number = {a["id"]: i for i, a in enumerate(anchors)}
        for cell, anchor_id, value in secret:
            per_cell[index_of[json.dumps(cell, sort_keys=True)]][anchor_number[anchor_id]] += value

        equations: list[list[int]] = []
        for view, answer in answers:
            assert answer["group_by"] == list(view.group_by), answer
            note(f"view {view.params()} -> {[(c['key'], c['suppressed']) for c in answer['cells']]}")
            figures = [(c["key"], c) for c in answer["cells"]] + [(None, answer["totals"])]
            for key, figure in figures:

                def inside(cell: dict[str, Any], key: dict[str, Any] | None = key, view: View = view) -> bool:
                    return view.selects(cell) and (key is None or view.key(cell) == key)

                assert not figure["suppressed"]  # confidential demand is left out, never suppressed
                counted = public + (secret if figure["confidential_included"] else [])
                true_count = sum(1 for c, _, _ in counted if inside(c))
                true_value = sum(v for c, _, v in counted if inside(c))
                true_anchors = {a for c, a, _ in counted if inside(c)}
                assert (figure["count"], figure["total_value_pence"], figure["anchors"]) == (
                    true_count,
                    true_value,
                    len(true_anchors),
                ), (view, key)
                if figure["confidential_included"]:
                    equations.append([1 if inside(json.loads(c)) else 0 for c in cells])

        # Everything the attacker can derive is the row space of the equations: a set of
        # aggregate-only cells is recovered exactly when it is orthogonal to the null space.
        width = len(cells)
        null = nullspace_mod_p([row for row in equations if any(row)], width) if width else []
        sums = [[0] * (1 << width) for _ in null]
        content: list[dict[int, int]] = [{} for _ in range(1 << width)]
        for mask in range(1, 1 << width):
            low = (mask & -mask).bit_length() - 1
            rest = mask & (mask - 1)
            merged = dict(content[rest])
            for anchor, value in per_cell[low].items():
                merged[anchor] = merged.get(anchor, 0) + value
            content[mask] = merged
            recovered = True
            for j, vector in enumerate(null):
                sums[j][mask] = (sums[j][rest] + vector[low]) % PRIME
                recovered &= sums[j][mask] == 0
            if recovered and unsafe(merged):
                attacked = [json.loads(cells[i]) for i in range(width) if mask >> i & 1]
                raise AssertionError(f"recoverable aggregate-only figure {merged} in cells {attacked}")


async def test_some_aggregate_only_figures_are_published_when_enough_anchors_share(
    app: FastAPI, refresh
) -> None:
    """The protection must not be 'suppress everything': with enough anchors sharing, cells publish."""
    async with client(app, STAFF) as http:
        anchor_ids = []
        for i in range(10):
            response = await http.post("/api/v1/anchors", json={"name": f"A{i}", "type": ANCHOR_TYPES[i % 6]})
            anchor_ids.append(response.json()["id"])
        for i, anchor_id in enumerate(anchor_ids):
            rows = []
            for n in range(24):
                rows.append(
                    json.dumps(
                        Line(
                            anchor=0,
                            aggregate_only=n % 3 == 0,
                            cpv=CPV[n % len(CPV)],
                            tender=QUARTERS[(n + i) % 3],
                            start_offset_months=1,
                            value=(2_000_000, 3_000_000, 5_000_000, 8_000_000, 12_000_000)[(n * 7 + i) % 5],
                            vcse=bool((n + i) % 2),
                            sme=True,
                            area=i % 2,
                            status="planned",
                        ).body(f"R{n}")
                    )
                )
            response = await http.post(
                "/api/v1/demand/imports",
                params={"anchor_id": anchor_id},
                content="\n".join(rows).encode(),
                headers={"Content-Type": "application/x-ndjson"},
            )
            assert response.status_code == 200
    await refresh()
    async with client(app, INTEGRATOR) as http:
        by_division = (await http.get("/api/v1/pipeline", params={"group_by": "cpv_division"})).json()
        by_quarter = (await http.get("/api/v1/pipeline", params={"group_by": "cpv_division,quarter"})).json()
    assert by_division["totals"]["confidential_included"] and by_division["totals"]["count"] == 240
    assert len(by_quarter["cells"]) == 9 and all(c["confidential_included"] for c in by_quarter["cells"])
    assert sum(c["count"] for c in by_quarter["cells"]) == 240
