"""What every page request passes through: the rate limit and key, the reader, upstream failures.

Anonymous by default (``GATEWAY_PAGES_REQUIRE_KEY`` asks for a bearer key), limited per client
address (``GATEWAY_PAGES_RATE_LIMIT_PER_MINUTE``); one ``PublicReader`` per app, so its caches
are shared; a service's refusal or absence becomes an error page, never a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import Depends, Request

from gateway.auth import AuthError
from gateway.pages.reader import NotFound, PublicReader, Refused, Unavailable
from gateway.pages.rendering import PageError
from gateway.runtime import GatewayRuntime


async def _runtime(request: Request) -> GatewayRuntime:
    runtime: GatewayRuntime = request.app.state.runtime
    return runtime


async def _reader(request: Request) -> PublicReader:
    reader: PublicReader | None = getattr(request.app.state, "pages_reader", None)
    if reader is None:
        runtime = await _runtime(request)
        reader = PublicReader(runtime.settings, runtime.http, runtime.secret)
        request.app.state.pages_reader = reader
    return reader


ReaderDep = Annotated[PublicReader, Depends(_reader)]


async def admitted(request: Request) -> None:
    """The rate limit per client address, and the key when the settings ask for one."""
    runtime = await _runtime(request)
    settings = runtime.settings
    client = request.client.host if request.client else "unknown"
    decision = await runtime.limiter.admit(f"pages:{client}", settings.pages_rate_limit_per_minute, "public")
    if not decision.allowed:
        raise PageError(
            429,
            "Too many requests",
            f"Please wait {decision.retry_after_seconds} seconds and try again.",
            {"Retry-After": str(decision.retry_after_seconds)},
        )
    if settings.pages_require_key:
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="seedbed"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise PageError(401, "A key is needed", "These pages need an API key of this Seedbed.", challenge)
        try:
            await runtime.auth.authenticate(token.strip())
        except AuthError as exc:
            raise PageError(401, "A key is needed", str(exc), challenge) from None


async def guard(call: Awaitable[Any]) -> Any:
    """An upstream answer, or the page that says why there is none."""
    try:
        return await call
    except NotFound:
        raise PageError(404, "Not found", "There is nothing published at this address.") from None
    except Refused as exc:
        details = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in exc.errors) or exc.detail
        raise PageError(422, "Those filters cannot be used", details) from None
    except Unavailable:
        raise PageError(
            503,
            "The pipeline is unavailable",
            "Seedbed cannot reach the demand service right now; try again in a minute.",
        ) from None
