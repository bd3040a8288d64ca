"""Reading the pages as a test does: the figures a page shows, and what the API says of the same view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from bs4 import BeautifulSoup

from gateway.pages.figures import PipelineQuery, quarters_from


def soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def table_figures(html: str, table_id: str) -> dict[str, list[Any]]:
    """A figures table by row key: per figure cell, ("withheld") or (count, value in pence)."""
    table = soup(html).find("table", id=table_id)
    assert table is not None, f"no table #{table_id}"
    out: dict[str, list[Any]] = {}
    for row in table.find("tbody").find_all("tr"):
        cells = []
        for td in row.find_all("td", class_="num"):
            if td.get("data-withheld"):
                cells.append("withheld")
            elif td.get("data-value-pence") is not None:
                cells.append((int(td["data-count"]), int(td["data-value-pence"])))
        out[str(row["data-key"])] = cells
    return out


def api_view(view: dict[str, Any], *dims: str) -> dict[tuple[str, ...], Any]:
    out = {}
    for cell in view["cells"]:
        key = tuple(str(cell["key"][d]) for d in dims)
        out[key] = "withheld" if cell["suppressed"] else (cell["count"], cell["total_value_pence"])
    return out


async def api_pipeline(http: httpx.AsyncClient, group_by: str, filters: dict[str, str]) -> dict[str, Any]:
    """``GET /api/v1/pipeline`` for the page's view (the next eight quarters, the same filters)."""
    query = PipelineQuery.from_params(filters)
    params = query.api_params(group_by, quarters_from(datetime.now(UTC).date()))
    response = await http.get("/api/v1/pipeline", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def expected_rows(view: dict[str, Any], dims: tuple[str, ...], quarters: list[str]) -> dict[str, list[Any]]:
    """The rows a page's figures table must show for an API answer."""
    cells = api_view(view, *dims)
    if dims == ("quarter",):
        return {q: [cells.get((q,), (0, 0))] for q in quarters}
    if dims == ("cpv_division",):
        return {k[0]: [v] for k, v in cells.items()}
    divisions = sorted({k[0] for k in cells})
    return {d: [cells.get((d, q), (0, 0)) for q in quarters] for d in divisions}


async def compare_with_api(page_html: str, http: httpx.AsyncClient, filters: dict[str, str]) -> int:
    """Assert that the page's three figures tables equal the API's answers; the cells compared."""
    quarters = quarters_from(datetime.now(UTC).date())
    compared = 0
    for table_id, group_by, dims in (
        ("by-quarter", "quarter", ("quarter",)),
        ("by-division", "cpv_division", ("cpv_division",)),
        ("by-division-quarter", "cpv_division,quarter", ("cpv_division", "quarter")),
    ):
        view = await api_pipeline(http, group_by, filters)
        expected = expected_rows(view, dims, quarters)
        shown = table_figures(page_html, table_id)
        assert shown == expected, (table_id, filters)
        compared += sum(len(v) for v in shown.values())
    return compared
