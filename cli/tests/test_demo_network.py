"""The demo network is what the issue asks for, the same for the same seed and quarter, and
written in the shapes the import routes read."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cli.demo import files
from cli.demo.network import LABEL, build_network, drop_in_start, drop_in_windows, quarter_of
from shared import cpv

TODAY = date(2026, 12, 2)
OCDS_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "ocds"


def as_data(network: Any) -> Any:
    return json.dumps(
        [
            network.anchors,
            network.cohorts,
            network.lines,
            network.enterprises,
            network.mentors,
            network.bookings,
            network.bids,
        ],
        default=repr,
        sort_keys=True,
    )


def test_the_same_seed_and_quarter_make_the_same_network_and_another_seed_another() -> None:
    assert as_data(build_network(7, TODAY)) == as_data(build_network(7, date(2026, 11, 1)))
    assert as_data(build_network(7, TODAY)) != as_data(build_network(8, TODAY))


def test_a_city_anchor_network_of_every_kind_the_issue_names() -> None:
    network = build_network(2026, TODAY)
    assert len(network.anchors) == 12
    names = [a.body["name"] for a in network.anchors]
    assert all(name.endswith(LABEL) for name in names)
    kinds = Counter(a.body["type"] for a in network.anchors)
    assert kinds == {
        "local_authority": 1,
        "nhs_trust": 3,
        "university": 2,
        "college": 1,
        "housing_association": 1,
        "police": 1,
        "fire": 1,
        "other": 2,
    }
    assert len({a.ref for a in network.anchors}) == 12


def test_about_400_lines_over_8_quarters_and_20_divisions_sent_three_ways() -> None:
    network = build_network(2026, TODAY)
    lines = [line.body for line in network.lines]
    assert len(lines) == 400
    assert (
        len({(line.anchor, b["external_ref"]) for line, b in zip(network.lines, lines, strict=True)}) == 400
    )
    assert len({cpv.division(b["cpv_codes"][0]) for b in lines}) == 20
    for body in lines:
        for code in body["cpv_codes"]:
            assert cpv.cpv_error(code) is None, code
        assert body["expected_tender_date"] <= body["contract_start"]
    quarters = {quarter_of(date.fromisoformat(b["expected_tender_date"])) for b in lines}
    assert len(quarters) == 8 and min(quarters) == quarter_of(TODAY)
    aggregate_only = [b for b in lines if b["visibility"] == "aggregate_only"]
    assert 20 <= len(aggregate_only) <= 60
    routes = Counter(line.route for line in network.lines)
    assert routes["post"] == 36 and routes["csv"] > 200 and routes["ocds"] > 50
    # Aggregate-only lines are in files the anchor sends, from several anchors (else every
    # pipeline figure holding them is suppressed).
    assert len({line.anchor for line in network.lines if line.body["visibility"] == "aggregate_only"}) >= 5


def test_enterprises_vary_in_form_size_place_stage_and_readiness() -> None:
    network = build_network(2026, TODAY)
    enterprises = network.enterprises
    assert 55 <= len(enterprises) <= 65
    assert len({e.body["name"] for e in enterprises}) == len(enterprises)
    assert len({e.body["legal_form"] for e in enterprises}) >= 8
    assert len({e.body["postcode"] for e in enterprises}) >= 8
    assert {e.body["stage"] for e in enterprises} == {"applicant", "incubating"}
    statuses = Counter(step.status for e in enterprises for step in e.milestones)
    assert statuses["verified"] > 100 and statuses["submitted"] > 10 and statuses["in_progress"] > 5
    expiring = [s for e in enterprises for s in e.milestones if s.expires_in_days and s.expires_in_days <= 30]
    assert expiring
    assert {e.body["cohort"] for e in enterprises} >= {c["name"] for c in network.cohorts}


def test_mentors_and_bookings_some_run_now_to_sign_off_what_was_submitted() -> None:
    network = build_network(2026, TODAY)
    assert len(network.mentors) == 20
    assert all(m.body["email"].endswith("@mentors.example.org") for m in network.mentors)
    enterprises = {e.ref: e for e in network.enterprises}
    completed = [b for b in network.bookings if b.complete]
    assert len(completed) >= 3 and len(network.bookings) - len(completed) >= 5
    for booking in completed:
        submitted = {s.code for s in enterprises[booking.enterprise].milestones if s.status == "submitted"}
        assert booking.milestone_code in submitted


@pytest.mark.parametrize(
    ("now", "start"),
    [
        ("2026-12-02T17:40:10+00:00", "2026-12-02T17:41:00+00:00"),
        ("2026-12-02T17:40:45+00:00", "2026-12-02T17:42:00+00:00"),
    ],
)
def test_a_drop_in_starts_at_a_whole_minute_at_least_20_seconds_away(now: str, start: str) -> None:
    assert drop_in_start(datetime.fromisoformat(now)) == datetime.fromisoformat(start)


@pytest.mark.parametrize(
    ("start", "windows"),
    [
        ("2026-12-02T17:41:00+00:00", {"2026-12-02": [("17:41", "18:41")]}),
        (
            "2026-12-02T23:30:00+00:00",
            {"2026-12-02": [("23:30", "24:00")], "2026-12-03": [("00:00", "00:30")]},
        ),
        ("2026-12-02T23:00:00+00:00", {"2026-12-02": [("23:00", "24:00")]}),
    ],
)
def test_a_drop_in_late_in_the_evening_gets_windows_that_touch_at_midnight(
    start: str, windows: dict[str, list[tuple[str, str]]]
) -> None:
    found = drop_in_windows(datetime.fromisoformat(start))
    assert {day.isoformat(): [(w["start"], w["end"]) for w in ws] for day, ws in found.items()} == windows


def test_the_csv_file_has_the_template_columns_and_a_row_per_line() -> None:
    network = build_network(2026, TODAY)
    lines = [line.body for line in network.lines if line.route == "csv"]
    rows = list(csv.DictReader(io.StringIO(files.csv_file(lines).decode())))
    assert len(rows) == len(lines)
    first, line = rows[0], lines[0]
    assert first["external_ref"] == line["external_ref"]
    assert first["cpv_codes"] == ";".join(line["cpv_codes"])
    assert first["delivery_area"] == line["delivery_area"]["label"]
    assert first["suitable_for_sme"] in ("true", "false")


def test_the_ocds_package_is_valid_ocds_1_1_planning_releases() -> None:
    network = build_network(2026, TODAY)
    lines = [line.body for line in network.lines if line.route == "ocds"][:10]
    package = json.loads(files.ocds_package("Calder Teaching Hospitals NHS Trust (demo)", lines))
    schema = json.loads((OCDS_DIR / "release-schema.json").read_text())
    validator = jsonschema.Draft4Validator(schema)
    for release in package["releases"]:
        errors = sorted(validator.iter_errors(release), key=str)
        assert not errors, errors[:3]
        assert release["tag"] == ["planning"] and release["initiationType"] == "tender"
    assert [r["ocid"] for r in package["releases"]] == [line["external_ref"] for line in lines]


def test_bids_on_posted_public_lines_with_wins_losses_and_open_bids() -> None:
    network = build_network(2026, TODAY)
    lines = {line.body["external_ref"]: line for line in network.lines}
    assert all(
        lines[bid.line].route == "post" and lines[bid.line].body["visibility"] == "public"
        for bid in network.bids
    )
    outcomes = Counter(bid.outcome for bid in network.bids)
    assert (
        outcomes["won"] >= 3
        and outcomes["lost"] >= 2
        and outcomes["submitted"] >= 2
        and outcomes["intended"] >= 1
    )
    decided = [bid.line for bid in network.bids if bid.outcome in ("won", "lost")]
    assert len(decided) == len(set(decided))  # one award per line
    assert all(bid.value_pence for bid in network.bids if bid.outcome in ("won", "lost"))
    assert len({bid.enterprise for bid in network.bids}) == len(network.bids)
