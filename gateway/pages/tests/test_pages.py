"""The pages as HTML, without a browser, against the whole system running with a small city.

What they must hold: anchors' text escaped; an aggregate-only line (title, value, its anchor's
part) nowhere in any page or download; CSV cells never formulas; ETag/304; a strict CSP and
nothing loaded from elsewhere; figures equal to the API's for the same view.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import pytest

from gateway.app import create_app
from gateway.pages.rendering import CONTENT_SECURITY_POLICY
from gateway.pages.tests.city import SECRET_TITLE, SECRET_VALUE_PENCE, City, published_after
from gateway.pages.tests.pages_html import api_pipeline, compare_with_api, soup, table_figures
from gateway.settings import GatewaySettings
from shared.testing.apps import TEST_SECRET, running
from shared.testing.databases import DatabaseFactory, alembic_prepare
from shared.testing.system import BOOTSTRAP_KEY, MIGRATIONS, System

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
async def browser_like(pages_system: System, city: City) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no credential, as a person's browser is."""
    async with httpx.AsyncClient(base_url=pages_system.url, timeout=30) as http:
        yield http


@pytest.fixture
async def staff(pages_system: System, city: City) -> AsyncIterator[httpx.AsyncClient]:
    async with pages_system.client() as http:
        yield http


async def _get(http: httpx.AsyncClient, path: str, status: int = 200) -> httpx.Response:
    response = await http.get(path)
    assert response.status_code == status, (path, response.status_code, response.text[:500])
    return response


def _pipeline_filter_urls(html: str) -> list[str]:
    """Every choice of every filter on the pipeline page, one at a time, and both suitabilities."""
    urls = []
    for select in soup(html).find_all("select"):
        for option in select.find_all("option"):
            if option["value"]:
                urls.append("/pipeline?" + urlencode({select["name"]: option["value"]}))
    urls.append("/pipeline?suitable_for_vcse=true&suitable_for_sme=true")
    return urls


async def _every_page(http: httpx.AsyncClient, city: City) -> dict[str, str]:
    """Every page and download a person can reach, by path."""
    pages: dict[str, str] = {}
    for path in [
        "/",
        "/pipeline",
        "/anchors",
        "/impact",
        "/pipeline.csv",
        "/pipeline.json",
        "/pipeline/ocds.json",
    ]:
        pages[path] = (await _get(http, path)).text
    for path in _pipeline_filter_urls(pages["/pipeline"]):
        pages[path] = (await _get(http, path)).text
        query = path.partition("?")[2]
        for download in ("/pipeline.csv", "/pipeline.json"):
            pages[f"{download}?{query}"] = (await _get(http, f"{download}?{query}")).text
    for sort in ("tender", "value", "title", "anchor", "posted"):
        for order in ("asc", "desc"):
            first = f"/pipeline/lines?sort={sort}&order={order}"
            pages[first] = (await _get(http, first)).text
            pages[first + "&page=2"] = (await _get(http, first + "&page=2")).text
            pages[first + "&page=3"] = (await _get(http, first + "&page=3")).text
            pages["/pipeline/lines.csv?" + first.partition("?")[2]] = (
                await _get(http, "/pipeline/lines.csv?" + first.partition("?")[2])
            ).text
    for anchor in city.anchors.values():
        for path in (f"/anchors/{anchor['id']}", f"/pipeline/lines?anchor_id={anchor['id']}"):
            pages[path] = (await _get(http, path)).text
    for line in city.public:
        pages[f"/pipeline/lines/{line['id']}"] = (await _get(http, f"/pipeline/lines/{line['id']}")).text
    return pages


async def test_an_aggregate_only_line_appears_in_no_page_and_no_download(
    browser_like: httpx.AsyncClient, city: City
) -> None:
    pages = await _every_page(browser_like, city)
    assert len(pages) > 80
    pounds = SECRET_VALUE_PENCE / 100
    secrets = [
        SECRET_TITLE,
        "secret-7731",
        str(SECRET_VALUE_PENCE),
        f"{pounds:,.0f}",
        f"{pounds:.0f}",
        f"{pounds:,.2f}",
    ]
    secrets += [line["id"] for line in city.aggregate_only] + [line["title"] for line in city.aggregate_only]
    secrets += ["Confidential care package", "Confidential cleaning"]
    for path, body in pages.items():
        for secret in secrets:
            assert secret not in body, f"{secret!r} appears in {path}"
    # Its own address is not found, and says nothing of it.
    response = await _get(browser_like, f"/pipeline/lines/{city.secret['id']}", 404)
    assert SECRET_TITLE not in response.text
    # Its anchor's page counts only the anchor's public lines.
    college = soup(pages[f"/anchors/{city.secret_anchor['id']}"])
    public = sum(
        line["estimated_value_pence"] for line in city.public if line["anchor_id"] == city.secret_anchor["id"]
    )
    shown = college.find(id="anchor-public-value")
    assert shown is not None and int(shown["data-value-pence"]) == public


async def test_anchors_text_is_escaped_wherever_it_is_shown(
    browser_like: httpx.AsyncClient, city: City
) -> None:
    line = city.script_line
    housing = city.anchors["Leeds & Yorkshire Housing <b>Association</b>"]
    paths = [
        f"/pipeline/lines/{line['id']}",
        "/pipeline/lines?sort=title&order=asc",
        f"/anchors/{line['anchor_id']}",
        "/anchors",
        f"/anchors/{housing['id']}",
    ]
    for path in paths:
        body = (await _get(browser_like, path)).text
        assert "<script" not in body.lower(), path
        assert "<b>Association" not in body, path
    detail = soup((await _get(browser_like, f"/pipeline/lines/{line['id']}")).text)
    assert detail.h1.get_text() == line["title"]  # shown as text, exactly as the anchor wrote it
    assert (
        "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;"
        in (await _get(browser_like, f"/pipeline/lines/{line['id']}")).text
    )
    listing = soup((await _get(browser_like, "/anchors")).text)
    assert "Leeds & Yorkshire Housing <b>Association</b>" in [a.get_text() for a in listing.find_all("a")]


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def test_csv_downloads_never_hold_a_formula(browser_like: httpx.AsyncClient, city: City) -> None:
    lines = await _get(browser_like, "/pipeline/lines.csv?sort=title")
    assert lines.headers["content-type"].startswith("text/csv")
    assert "attachment" in lines.headers["content-disposition"]
    rows = _csv_rows(lines.text)
    titles = {row[1] for row in rows[1:]}
    assert '\'=HYPERLINK("http://evil.example/steal","Click for details")' in titles
    assert "'+SUM(1,2) grounds survey" in titles
    assert "'@SUM(A1:A9) print services" in titles
    assert "'-2+3 minibus hire" in titles
    assert len(rows) == len(city.public) + 1
    for download in ("/pipeline.csv", "/pipeline/lines.csv?sort=value&order=desc"):
        for row in _csv_rows((await _get(browser_like, download)).text):
            for cell in row:
                assert not cell.lstrip(" ").startswith(FORMULA_START), (download, cell)


async def test_pages_answer_304_to_their_etag(browser_like: httpx.AsyncClient, city: City) -> None:
    for path in [
        "/pipeline",
        "/pipeline?cpv=85",
        "/pipeline/lines?sort=value",
        f"/pipeline/lines/{city.public[0]['id']}",
        "/anchors",
        f"/anchors/{city.public[0]['anchor_id']}",
        "/pipeline.csv",
        "/pipeline.json",
    ]:
        first = await _get(browser_like, path)
        tag = first.headers["etag"]
        again = await browser_like.get(path, headers={"If-None-Match": tag})
        assert again.status_code == 304, path
        assert again.content == b""
        assert again.headers["etag"] == tag
        other = await browser_like.get(path, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200 and other.content == first.content, path


async def test_every_page_has_a_strict_policy_and_loads_only_its_own_assets(
    browser_like: httpx.AsyncClient, city: City
) -> None:
    for path in ["/", "/pipeline", "/pipeline/lines", f"/pipeline/lines/{city.public[0]['id']}", "/anchors",
                 f"/anchors/{city.public[0]['anchor_id']}", "/impact",
                 "/pipeline/lines/not-a-line"]:  # fmt: skip
        response = await browser_like.get(path)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        page = soup(response.text)
        assert page.find("script") is None and not page.find_all(attrs={"style": True}), path
        assert not re.search(r"\son[a-z]+=", response.text), path  # no inline handlers
        for element in page.find_all(["link", "img", "a", "form"]):
            target = element.get("href") or element.get("src") or element.get("action") or ""
            assert not re.match(r"^[a-z]+:|^//", target), (path, target)
        for link in page.find_all("link", rel="stylesheet"):
            css = await _get(browser_like, link["href"])
            assert css.headers["content-type"].startswith("text/css")
            assert "url(" not in css.text and "@import" not in css.text
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "script-src" not in CONTENT_SECURITY_POLICY


async def test_the_page_shows_the_apis_figures_for_the_same_view(
    browser_like: httpx.AsyncClient, staff: httpx.AsyncClient, city: City
) -> None:
    compared = 0
    for filters in (
        {},
        {"cpv": "85"},
        {"anchor_type": "nhs_trust"},
        {"suitable_for_vcse": "true"},
        {"value_band": "1m-5m"},
    ):
        html = (await _get(browser_like, "/pipeline?" + urlencode(filters))).text
        compared += await compare_with_api(html, staff, filters)
    assert compared > 50
    unfiltered = table_figures((await _get(browser_like, "/pipeline")).text, "by-quarter")
    filtered = table_figures((await _get(browser_like, "/pipeline?cpv=45")).text, "by-quarter")
    assert unfiltered != filtered  # a filter changes the figures


async def test_what_the_figures_leave_out_is_explained_in_the_apis_words(
    browser_like: httpx.AsyncClient, staff: httpx.AsyncClient, city: City
) -> None:
    # A filter by anchor type cuts the confidential blocks: the API counts public lines only there.
    filters = {"anchor_type": "nhs_trust"}
    view = await api_pipeline(staff, "quarter", filters)
    assert view["confidential"]["included"] is False
    page = soup((await _get(browser_like, "/pipeline?" + urlencode(filters))).text)
    notices = " ".join(p.get_text(" ", strip=True) for p in page.find_all(class_="notice"))
    assert view["confidential"]["note"] in notices
    unfiltered = await api_pipeline(staff, "quarter", {})
    page = soup((await _get(browser_like, "/pipeline")).text)
    notices = " ".join(p.get_text(" ", strip=True) for p in page.find_all(class_="notice"))
    assert unfiltered["confidential"]["note"] in notices


async def test_a_filter_the_api_refuses_is_a_page_that_names_it(
    browser_like: httpx.AsyncClient, city: City
) -> None:
    response = await _get(browser_like, "/pipeline?anchor_type=spaceship", 422)
    assert "anchor_type" in response.text and "spaceship" in response.text
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_lines_are_paginated_and_sorted(browser_like: httpx.AsyncClient, city: City) -> None:
    values = []
    for number in (1, 2, 3):
        page = soup((await _get(browser_like, f"/pipeline/lines?sort=value&order=desc&page={number}")).text)
        values += [int(td["data-value-pence"]) for td in page.select("#lines td[data-value-pence]")]
    assert values == sorted((line["estimated_value_pence"] for line in city.public), reverse=True)
    first = soup((await _get(browser_like, "/pipeline/lines?sort=value&order=desc")).text)
    assert first.find(id="result-count")["data-total"] == str(len(city.public))
    assert first.select_one('th[aria-sort="descending"]') is not None
    vcse = soup((await _get(browser_like, "/pipeline/lines?suitable_for_vcse=true")).text)
    assert vcse.find(id="result-count")["data-total"] == str(
        sum(line["suitable_for_vcse"] for line in city.public)
    )


async def test_a_new_snapshot_changes_the_pages_etag(
    browser_like: httpx.AsyncClient, staff: httpx.AsyncClient, city: City
) -> None:
    before = await _get(browser_like, "/pipeline")
    moment = datetime.now(UTC)
    line = dict(city.public[0])
    body = {
        k: line[k] for k in ("title", "cpv_codes", "category", "expected_tender_date", "suitable_for_vcse")
    }
    body |= {
        "anchor_id": line["anchor_id"],
        "title": "Late addition: laundry",
        "estimated_value_pence": 12_300_00,
    }
    assert (await staff.post("/api/v1/demand", json=body)).status_code == 201
    await published_after(staff, moment)
    after = await browser_like.get("/pipeline", headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    await compare_with_api(after.text, staff, {})


async def test_the_pages_can_require_a_key(
    pages_system: System, database_factory: DatabaseFactory, nats_url: str
) -> None:
    url = await database_factory.create("sqlite", "gateway", alembic_prepare(MIGRATIONS["gateway"]))
    upstreams = pages_system.upstreams()
    settings = GatewaySettings(
        database_url=url,
        nats_url=nats_url,
        internal_secret=TEST_SECRET,
        environment="test",
        access_log=False,
        bootstrap_staff_key=BOOTSTRAP_KEY,
        enterprises_url=upstreams["enterprises"],
        demand_url=upstreams["demand"],
        mentoring_url=upstreams["mentoring"],
        pages_require_key=True,
    )
    app = create_app(settings)
    async with running(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            refused = await http.get("/pipeline")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert (
                await http.get("/anchors", headers={"Authorization": "Bearer sbk_wrong"})
            ).status_code == 401
            allowed = await http.get("/anchors", headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"})
            assert allowed.status_code == 200 and "Leeds City Council" in allowed.text


async def _bid(staff: httpx.AsyncClient, enterprise_id: str, demand_id: str) -> str:
    """A submitted bid, once the enterprises service has heard of the line."""
    url = f"/api/v1/enterprises/{enterprise_id}/bids"
    for _ in range(200):
        response = await staff.post(url, json={"demand_id": demand_id, "role": "lead", "status": "submitted"})
        if response.status_code != 404:
            break
        await asyncio.sleep(0.05)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_the_impact_page_shows_the_shareable_report_and_withholds_small_cohorts(
    browser_like: httpx.AsyncClient, staff: httpx.AsyncClient, city: City
) -> None:
    tag = uuid.uuid4().hex[:6]
    cohorts = []
    for name in (f"Spring {tag}", f"Autumn {tag}"):
        body = {
            "name": name,
            "programme": "Tender readiness",
            "start_date": "2026-01-05",
            "end_date": "2026-12-18",
        }
        cohorts.append((await staff.post("/api/v1/cohorts", json=body)).json())
    anchor_id = city.public[0]["anchor_id"]
    lines = [line for line in city.public if line["anchor_id"] == anchor_id]
    members = [(cohorts[0], n) for n in range(3)] + [(cohorts[1], 3)]
    for cohort, n in members:
        body = {
            "name": f"Enterprise {n} {tag}",
            "legal_form": "cic_limited_by_guarantee",
            "postcode": "LS6 2QR",
            "cpv_codes": ["55300000"],
            "stage": "incubating",
            "cohort_id": cohort["id"],
        }
        enterprise = (await staff.post("/api/v1/enterprises", json=body)).json()
        bid_id = await _bid(staff, enterprise["id"], lines[n % len(lines)]["id"])
        if cohort is cohorts[0]:
            won = {"status": "won", "contract_value_pence": 1_000_000 * (n + 1)}
            assert (await staff.patch(f"/api/v1/bids/{bid_id}", json=won)).status_code == 200

    html = (await _get(browser_like, "/impact")).text
    shared = (
        await staff.get("/api/v1/reports/impact", params={"shareable": "true", "group_by": "cohort"})
    ).json()
    full = (await staff.get("/api/v1/reports/impact", params={"group_by": "cohort"})).json()
    rows = {
        row.find("th").get_text(strip=True): row for row in soup(html).select("#by-cohort ~ table tbody tr")
    }

    assert shared["totals"]["value_won_pence"] == full["totals"]["value_won_pence"] == 6_000_000
    assert "£60,000" in html  # the totals: four enterprises bid
    # Autumn alone has one bidder; Spring, the only other group, would give it back from the totals.
    for cohort in cohorts:
        assert "withheld" in rows[cohort["name"]].get_text(), cohort["name"]
    staff_view = {g["label"]: g["figures"] for g in full["groups"]}
    assert staff_view[cohorts[0]["name"]]["value_won_pence"] == 6_000_000  # staff see all of it
    assert staff_view[cohorts[1]["name"]]["bids_submitted"] == 1
