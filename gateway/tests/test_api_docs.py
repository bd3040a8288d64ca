"""/docs and /redoc work offline: every script, style sheet, icon and document they load is
served by the gateway itself, and none of them names another host."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from gateway.tests.conftest import GatewayFactory, client_of

PAGES = ("/docs", "/redoc", "/api/v1/docs")
# What a page loads: attributes that fetch, and the URLs Swagger UI's and ReDoc's start-up
# scripts are given (``url: '/openapi.json'``, ``spec-url="..."``).
LOADING_ATTRIBUTES = {"src", "href", "spec-url", "data", "srcset", "poster", "action"}
SCRIPT_URL = re.compile(r"""\burl\s*:\s*['"]([^'"]+)['"]""")


class Loads(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        self.urls += [value for name, value in attrs if name in LOADING_ATTRIBUTES and value]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)
            self.urls += SCRIPT_URL.findall(data)


@pytest.mark.parametrize("page", PAGES)
async def test_the_docs_page_loads_only_what_the_gateway_serves(
    gateway_over: GatewayFactory, page: str
) -> None:
    async with gateway_over() as app, client_of(app, key=None) as http:
        response = await http.get(page)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/html")
        loads = Loads()
        loads.feed(response.text)
        assert any(url.endswith(".js") for url in loads.urls), loads.urls
        assert any("openapi.json" in url for url in loads.urls), loads.urls
        # No absolute URL anywhere in the page: nothing it names can leave the machine.
        assert not re.search(r"(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", response.text), response.text
        for url in loads.urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{page} loads {url} from elsewhere"
            assert url.startswith("/"), url
            asset = await http.get(url)
            assert asset.status_code == 200, f"{page} loads {url}: {asset.status_code}"
            assert asset.content, url


async def test_the_assets_are_the_packaged_swagger_ui_and_redoc(gateway_over: GatewayFactory) -> None:
    async with gateway_over() as app, client_of(app, key=None) as http:
        swagger = await http.get("/docs/assets/swagger-ui-bundle.js")
        redoc = await http.get("/docs/assets/redoc.standalone.js")
        css = await http.get("/docs/assets/swagger-ui.css")
    assert swagger.status_code == redoc.status_code == css.status_code == 200
    assert "SwaggerUIBundle" in swagger.text
    assert "Redoc" in redoc.text
    assert css.headers["content-type"].startswith("text/css")
