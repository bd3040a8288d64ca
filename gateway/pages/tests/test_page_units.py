"""Pure rules of the pages: CSV neutralisation, quarters, labels, chart geometry."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest

from gateway.pages import charts
from gateway.pages.figures import (
    Cell,
    PipelineQuery,
    band_name,
    band_order,
    notes_of,
    pounds,
    quarter_bounds,
    quarter_label,
    quarters_from,
    short_pounds,
)
from shared.cpv import DIVISION_NAMES, DIVISIONS
from shared.downloads import csv_text, neutralised


@pytest.mark.parametrize(
    "text",
    ['=HYPERLINK("http://x","y")', "+SUM(1,2)", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", "  =1+1"],
)
def test_a_cell_a_spreadsheet_would_run_is_text(text: str) -> None:
    assert neutralised(text) == "'" + text


@pytest.mark.parametrize("text", ["School meals", "a=b", "", "£1,000", "Line 2 - north"])
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert neutralised(text) == text


def test_numbers_stay_numbers_and_every_cell_is_quoted() -> None:
    text = csv_text(["title", "value"], [["=1+1", 1200], ['He said "hi", then left', None]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["title", "value"], ["'=1+1", "1200"], ['He said "hi", then left', ""]]
    assert text.splitlines()[1] == '"\'=1+1","1200"'


def test_quarters_shown_start_with_todays() -> None:
    assert quarters_from(date(2026, 12, 2)) == [
        "2026-Q4", "2027-Q1", "2027-Q2", "2027-Q3", "2027-Q4", "2028-Q1", "2028-Q2", "2028-Q3",
    ]  # fmt: skip
    assert quarter_bounds("2027-Q4") == (date(2027, 10, 1), date(2027, 12, 31))
    assert quarter_label("2027-Q1") == "Jan-Mar 2027"


def test_value_bands_read_as_money_and_sort_by_their_floor() -> None:
    bands = ["5m+", "30k-100k", "0-30k", "1m-5m", "250k-1m", "100k-250k"]
    assert sorted(bands, key=band_order) == ["0-30k", "30k-100k", "100k-250k", "250k-1m", "1m-5m", "5m+"]
    assert band_name("30k-100k") == "£30k to £100k"
    assert band_name("5m+") == "£5m and above"


def test_money_in_words() -> None:
    assert pounds(123_456_789) == "£1,234,568"
    assert pounds(None) == "withheld"
    assert short_pounds(250_000_000) == "£2.5m"
    assert short_pounds(4_500_000) == "£45k"


def test_every_division_has_a_name() -> None:
    assert set(DIVISION_NAMES) == DIVISIONS
    assert DIVISION_NAMES["45"] == "Construction work"


def test_the_form_and_the_api_parameters_of_a_view() -> None:
    query = PipelineQuery.from_params(
        {"anchor_type": "nhs_trust", "cpv": "85", "suitable_for_vcse": "true", "value_band": ""}
    )
    assert query.form() == [("anchor_type", "nhs_trust"), ("cpv", "85"), ("suitable_for_vcse", "true")]
    assert query.api_params("quarter", ["2027-Q1", "2027-Q2"])[:3] == [
        ("group_by", "quarter"),
        ("from", "2027-Q1"),
        ("to", "2027-Q2"),
    ]
    assert "anchor type: NHS trust" in query.described()


def test_notes_and_flags_the_api_publishes_are_kept() -> None:
    cell = Cell.of(
        {
            "key": {"quarter": "2027-Q1"},
            "count": 3,
            "total_value_pence": 10,
            "suppressed": False,
            "perturbed": True,
        }
    )
    assert cell.flags == ["perturbed"]
    assert notes_of([{"note": "a"}, {"notes": ["a", "b"]}]) == ["a", "b"]


def _cell(value: int | None, suppressed: bool = False) -> Cell:
    return Cell({}, None if suppressed else 2, value, None if suppressed else 2, None, None, suppressed)


def test_a_withheld_quarter_is_drawn_as_withheld_not_as_a_value() -> None:
    chart = charts.quarter_bars(
        ["2027-Q1", "2027-Q2", "2027-Q3"], {("2027-Q1",): _cell(100_000), ("2027-Q2",): _cell(None, True)}
    )
    first, second, third = chart.bars
    assert not first.withheld and first.height == pytest.approx(
        chart.plot_height
    )  # the largest fills the axis
    assert second.withheld and second.value_text == "withheld" and "withheld" in second.title
    assert third.height == 0 and not third.withheld  # nothing published there


def test_heat_map_shades_and_withheld_cells() -> None:
    cells = {
        ("45", "2027-Q1"): _cell(600),
        ("45", "2027-Q2"): _cell(100),
        ("85", "2027-Q1"): _cell(None, True),
    }
    chart = charts.heat_map(["45", "85"], ["2027-Q1", "2027-Q2"], cells)
    by_title = {c.title.split(":")[0]: c for c in chart.cells}
    assert by_title["45 Construction work, Jan-Mar 2027"].fill == charts.HEAT_FILLS[-1]
    assert by_title["85 Health and social work services, Jan-Mar 2027"].withheld
    assert by_title["85 Health and social work services, Apr-Jun 2027"].text == "\u2013"
    assert charts.nice_ceiling(1_730_000) == 2_000_000
    assert charts.nice_ceiling(5_500_000) == 6_000_000
    assert charts.nice_ceiling(100) == 100
