"""The pages in a real browser (marker ``browser``; run with ``-m browser``, after make test).

For each page: no console error, no request leaving 127.0.0.1, no serious or critical axe-core
violation, a screenshot; on the pipeline, the filters (used with the keyboard) change the URL and
the figures, a view that leaves confidential demand out says so, and the figures equal the API's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, Route, sync_playwright

from gateway.pages.tests.browser import chromium_or_reason, screenshots_dir
from gateway.pages.tests.city import City
from gateway.pages.tests.pages_html import compare_with_api, table_figures
from shared.testing.system import System

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"127.0.0.1"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable, reason = chromium_or_reason()
    if executable is None:
        pytest.fail(f"no browser for the browser tests: {reason}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Visit:
    page: Page
    console_errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def visit(browser: Browser) -> Iterator[Visit]:
    """A fresh page that records console errors and stops (and records) any request off this machine."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=True)
    page = context.new_page()
    seen = Visit(page)

    def route(route: Route) -> None:
        url = route.request.url
        seen.requests.append(url)
        if urlparse(url).hostname not in LOCAL_HOSTS:
            seen.outside.append(url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", route)
    page.on("console", lambda message: message.type == "error" and seen.console_errors.append(message.text))
    page.on("pageerror", lambda error: seen.console_errors.append(str(error)))
    yield seen
    context.close()


def _check_page(seen: Visit, name: str) -> None:
    page = seen.page
    page.screenshot(path=str(screenshots_dir() / f"{name}.png"), full_page=True)
    assert seen.console_errors == [], (name, seen.console_errors)
    assert seen.outside == [], (name, seen.outside)
    assert all(urlparse(u).hostname in LOCAL_HOSTS for u in seen.requests)
    results = Axe().run(page)
    serious = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:5])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == [], (name, serious)
    assert page.locator("h1").count() == 1, name


def _compare(system: System, html: str, filters: dict[str, str]) -> int:
    async def run() -> int:
        async with system.client() as http:
            return await compare_with_api(html, http, filters)

    # Playwright's sync API keeps an event loop running in this thread: ask the API from another.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def _pages(city: City) -> dict[str, str]:
    line = city.public[0]
    return {
        "home": "/",
        "pipeline": "/pipeline",
        "pipeline-filtered": "/pipeline?cpv=85&suitable_for_vcse=true",
        "lines": "/pipeline/lines",
        "line": f"/pipeline/lines/{line['id']}",
        "anchors": "/anchors",
        "anchor": f"/anchors/{line['anchor_id']}",
        "impact": "/impact",
        "not-found": "/pipeline/lines/no-such-line",
    }


@pytest.mark.parametrize(
    "name", ["home", "pipeline", "pipeline-filtered", "lines", "line", "anchors", "anchor", "impact"]
)
def test_each_page_is_clean_accessible_and_local(
    pages_system: System, city: City, visit: Visit, name: str
) -> None:
    response = visit.page.goto(pages_system.url + _pages(city)[name])
    assert response is not None and response.status == 200
    _check_page(visit, name)


def test_an_unknown_line_is_a_clean_not_found_page(pages_system: System, city: City, visit: Visit) -> None:
    response = visit.page.goto(pages_system.url + _pages(city)["not-found"])
    assert response is not None and response.status == 404
    visit.console_errors = [e for e in visit.console_errors if "404" not in e]  # the page's own status
    _check_page(visit, "not-found")


def _query(page: Page) -> dict[str, Any]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def test_pipeline_filters_change_the_url_and_the_figures_with_the_keyboard(
    pages_system: System, city: City, visit: Visit
) -> None:
    page = visit.page
    page.goto(pages_system.url + "/pipeline")
    before = table_figures(page.content(), "by-quarter")
    assert _compare(pages_system, page.content(), {}) > 0
    # Keyboard only: skip link, then the division filter, then the button.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    page.focus("#f-cpv")
    page.select_option("#f-cpv", "85")
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('name')") == "suitable_for_vcse":
            page.keyboard.press("Space")
        if page.evaluate("document.activeElement.tagName") == "BUTTON":
            break
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert _query(page) == {"cpv": "85", "suitable_for_vcse": "true"}
    after = table_figures(page.content(), "by-quarter")
    assert after != before
    assert _compare(pages_system, page.content(), {"cpv": "85", "suitable_for_vcse": "true"}) > 0
    assert page.locator("#f-cpv").input_value() == "85"
    _check_page(visit, "pipeline-after-filters")


def test_a_view_without_confidential_demand_says_so(pages_system: System, city: City, visit: Visit) -> None:
    page = visit.page
    page.goto(pages_system.url + "/pipeline?anchor_type=nhs_trust")
    notice = page.locator("p.notice", has_text="confidential")
    assert notice.count() > 0
    notice.first.screenshot(path=str(screenshots_dir() / "confidential-note.png"))


def test_lines_sort_and_page_from_the_form(pages_system: System, city: City, visit: Visit) -> None:
    page = visit.page
    page.goto(pages_system.url + "/pipeline/lines")
    page.select_option("#l-sort", "value")
    page.select_option("#l-order", "desc")
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    assert _query(page) == {"sort": "value", "order": "desc"}
    first = int(page.locator("#lines td[data-value-pence]").first.get_attribute("data-value-pence") or 0)
    assert first == max(line["estimated_value_pence"] for line in city.public)
    with page.expect_navigation():
        page.get_by_role("link", name="Next page").click()
    assert _query(page)["page"] == "2"
    _check_page(visit, "lines-by-value-page-2")


def test_the_pages_work_with_javascript_off(pages_system: System, city: City, browser: Browser) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(pages_system.url + "/pipeline")
    page.select_option("#f-anchor-type", "nhs_trust")
    with page.expect_navigation():
        page.get_by_role("button", name="Show").click()
    assert _query(page) == {"anchor_type": "nhs_trust"}
    assert _compare(pages_system, page.content(), {"anchor_type": "nhs_trust"}) > 0
    page.screenshot(path=str(screenshots_dir() / "pipeline-without-javascript.png"), full_page=True)
    context.close()


def test_downloads_are_served_by_seedbed(pages_system: System, city: City, visit: Visit) -> None:
    page = visit.page
    page.goto(pages_system.url + "/pipeline")
    for name in ("This view as CSV", "This view as JSON"):
        with page.expect_download() as download:
            page.get_by_role("link", name=name).click()
        assert urlparse(download.value.url).hostname == "127.0.0.1"
        assert download.value.failure() is None
    assert visit.outside == []
