"""How a page is answered: Jinja2 templates, security headers, ETag/304, downloads, error pages.

Every page is HTML rendered on the server with no script; the Content-Security-Policy
allows nothing but Seedbed's own stylesheet and images, so even text that slipped past
escaping could not run. One module so every page, download and error carries the same headers.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from gateway.pages.figures import (
    CATEGORY_NAMES,
    METHOD_NAMES,
    STATUS_NAMES,
    WITHHELD,
    anchor_type_name,
    area_name,
    band_name,
    division_label,
    division_name,
    percent,
    pounds,
    quarter_label,
    short_pounds,
)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
STATIC_PREFIX = "/static/pages"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HTML = "text/html; charset=utf-8"


def _static_version() -> str:
    """A digest of the static files, in their URLs, so they can be cached for a year."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _templates_version() -> str:
    digest = hashlib.sha256()
    for path in sorted((HERE / "templates").iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


STATIC_VERSION = _static_version()
BUILD = _templates_version() + STATIC_VERSION

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    undefined=StrictUndefined,
    lstrip_blocks=True,
)
templates.globals |= {
    "static": lambda name: f"{STATIC_PREFIX}/{name}?v={STATIC_VERSION}",
    "WITHHELD": WITHHELD,
}
templates.filters |= {
    "pounds": pounds,
    "short_pounds": short_pounds,
    "percent": percent,
    "quarter_label": quarter_label,
    "division_label": division_label,
    "division_name": division_name,
    "anchor_type_name": anchor_type_name,
    "area_name": area_name,
    "band_name": band_name,
    "category_name": lambda v: CATEGORY_NAMES.get(v, v),
    "status_name": lambda v: STATUS_NAMES.get(v, v),
    "method_name": lambda v: METHOD_NAMES.get(v, v),
    "long_date": lambda v: date.fromisoformat(v[:10]).strftime("%-d %B %Y") if v else "not given",
    "number": lambda v: "withheld" if v is None else f"{v:,}",
    "fmt": lambda v, spec: format(v, spec),
}


class PageError(Exception):
    """An answer that is an error page: its status, words, and headers (``Retry-After``...)."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}


def render(name: str, **context: Any) -> bytes:
    return templates.get_template(name).render(**context).encode()


def page(body: bytes, request: Request, *, status: int = 200, etag: str | None = None) -> Response:
    headers = dict(SECURITY_HEADERS)
    if etag is not None:
        headers["ETag"] = etag
        headers["Cache-Control"] = "no-cache"
        if status == 200 and etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
    else:
        headers["Cache-Control"] = "no-store"
    return Response(body, status_code=status, media_type=HTML, headers=headers)


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def etag_of(*parts: str) -> str:
    """A page's ETag: its parts and the build (templates and static files), so a deploy changes it."""
    return '"page-' + hashlib.sha256("|".join((BUILD, *parts)).encode()).hexdigest()[:24] + '"'


def download_headers(name: str, etag: str) -> dict[str, str]:
    return SECURITY_HEADERS | {
        "Content-Disposition": f'attachment; filename="{name}"',
        "ETag": etag,
        "Cache-Control": "no-cache",
    }


def error_page(request: Request, exc: Exception) -> Response:
    """The exception handler of ``PageError``: the error as a page, with the error's headers."""
    assert isinstance(exc, PageError)
    body = render("error.html", page="", status=exc.status, title=exc.title, detail=exc.detail)
    response = page(body, request, status=exc.status)
    response.headers.update(exc.headers)
    return response
