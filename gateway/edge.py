"""The front door: pure ASGI in front of the FastAPI app.

For every request it answers CORS, authenticates the caller, applies the rate
and body limits, then either forwards the request to its service (the pass-through
path never enters FastAPI) or hands it, with the principal in
``scope["state"]``, to the gateway's own FastAPI routes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import AuthError, Credential, make_credential
from gateway.limits import Decision
from gateway.metrics import RATE_LIMIT_REFUSALS
from gateway.proxy import payload_too_large, send_problem
from gateway.routes import GATEWAY, is_import, is_public_feed, owner_of
from gateway.runtime import GatewayRuntime
from shared.principal import Principal
from shared.problems import Problem

log = logging.getLogger("seedbed.gateway.edge")

# Documents and probes anyone may read.
OPEN_PATHS = frozenset({"/api/v1/openapi.json", "/api/v1/docs"})
CORS_ALLOW_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_ALLOW_HEADERS = (
    b"Authorization, Content-Type, Idempotency-Key, If-Match, If-None-Match, "
    b"X-Request-ID, traceparent, tracestate, Last-Event-ID"
)
CORS_EXPOSE_HEADERS = (
    b"ETag, Location, RateLimit, RateLimit-Policy, Retry-After, X-Request-ID, "
    b"Idempotent-Replayed, Content-Disposition"
)
_WWW_AUTHENTICATE = 'Bearer realm="seedbed"'
AUTH_FAILURES_POLICY = "auth-failures"
MAX_SUSPECTS = 100_000
_PUBLIC_PRINCIPAL = Principal(role="public", subject_id=None, actor="public")


def _unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = _WWW_AUTHENTICATE + (f', error="{error}"' if error else "")
    return Problem(401, "Unauthorized", detail, type="unauthorized", headers={"WWW-Authenticate": challenge})


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, runtime: GatewayRuntime) -> None:
        self.app = app
        self.runtime = runtime
        settings = runtime.settings
        self.cors_origins = frozenset(origin.encode() for origin in settings.cors_origins)
        self.cors_max_age = str(settings.cors_max_age_seconds).encode()
        self.max_body = settings.max_body_bytes
        self.max_import_body = settings.max_import_body_bytes
        self.public_rate = settings.public_rate_limit_per_minute
        self._public = make_credential(_PUBLIC_PRINCIPAL, "public", "public", self.public_rate)
        self.auth_failure_limit = settings.auth_failure_limit_per_minute
        self._suspects = runtime.auth_failures_seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        authorization = origin = preflight = None
        authorizations = 0
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
                authorizations += 1
            elif name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                preflight = value

        cors: list[tuple[bytes, bytes]] = []
        if origin is not None and self.cors_origins:
            if origin in self.cors_origins:
                if method == "OPTIONS" and preflight is not None:
                    await self._preflight(send, origin)
                    return
                cors = [
                    (b"access-control-allow-origin", origin),
                    (b"vary", b"Origin"),
                    (b"access-control-expose-headers", CORS_EXPOSE_HEADERS),
                ]
            elif method == "OPTIONS" and preflight is not None:
                await send_problem(
                    scope,
                    receive,
                    send,
                    Problem(403, "Forbidden", "This origin may not call the API.", type="cors-origin"),
                )
                return

        if authorizations > 1:
            # Proxies and frameworks disagree on which of several wins: take none.
            problem = Problem(
                400,
                "Bad Request",
                "Send one Authorization header, not several.",
                type="duplicate-authorization",
            )
            await send_problem(scope, receive, send, problem, cors)
            return

        owner = owner_of(path)
        if owner is None or path in OPEN_PATHS:
            await self.app(scope, receive, _with_headers(send, cors) if cors else send)
            return

        credential = await self._credential(scope, receive, send, method, path, authorization, cors)
        if credential is None:
            return
        runtime = self.runtime
        decision = await runtime.limiter.admit(
            credential.limit_key,
            credential.rate_limit_per_minute,
            "public" if credential.kind == "public" else "api",
        )
        extra = decision.headers + cors if cors else decision.headers
        if not decision.allowed:
            RATE_LIMIT_REFUSALS.labels("public" if credential.kind == "public" else "api").inc()
            problem = Problem(
                429,
                "Too Many Requests",
                f"This credential may make {credential.rate_limit_per_minute} requests a minute; "
                f"retry in {decision.retry_after_seconds} s.",
                type="rate-limited",
            )
            await send_problem(scope, receive, send, problem, extra)
            return
        body_limit = self.max_import_body if is_import(method, path) else self.max_body

        if owner == GATEWAY:
            state = scope.setdefault("state", {})
            state["principal"] = credential.principal
            state["credential"] = credential
            declared = _content_length(scope)
            if declared is not None and declared > body_limit:
                await send_problem(scope, receive, send, payload_too_large(body_limit), extra)
                return
            await self.app(scope, _limited(receive, body_limit), _with_headers(send, extra))
            return

        await runtime.proxy.forward(scope, receive, send, owner, credential.payload, body_limit, extra)

    async def _credential(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        path: str,
        authorization: bytes | None,
        cors: list[tuple[bytes, bytes]],
    ) -> Credential | None:
        if authorization is None:
            if is_public_feed(method, path):
                public = self._public
                return Credential(
                    public.principal, public.payload, "public", f"public:{_address(scope)}", self.public_rate
                )
            await send_problem(
                scope,
                receive,
                send,
                _unauthorized("Send an API key or an OIDC token as 'Authorization: Bearer <credential>'."),
                cors,
            )
            return None
        address = _address(scope)
        if address in self._suspects:
            refused = await self._refused(address)
            if refused is not None:
                await send_problem(scope, receive, send, refused[0], refused[1] + cors)
                return None
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            if await self._failed(scope, receive, send, address, cors):
                return None
            await send_problem(
                scope,
                receive,
                send,
                _unauthorized(
                    "Use the Bearer scheme: 'Authorization: Bearer <credential>'.", "invalid_request"
                ),
                cors,
            )
            return None
        try:
            return await self.runtime.auth.authenticate(token.decode("latin-1"))
        except AuthError as exc:
            if not await self._failed(scope, receive, send, address, cors):
                await send_problem(scope, receive, send, _unauthorized(str(exc), "invalid_token"), cors)
        except Exception:
            log.exception("credential check failed")
            await send_problem(
                scope,
                receive,
                send,
                Problem(
                    503,
                    "Service Unavailable",
                    "Credentials cannot be checked right now; try again shortly.",
                    type="auth-unavailable",
                    headers={"Retry-After": "2"},
                ),
                cors,
            )
        return None

    async def _refused(self, address: str) -> tuple[Problem, list[tuple[bytes, bytes]]] | None:
        now = time.monotonic()
        if self._suspects.get(address, 0.0) <= now:
            self._suspects.pop(address, None)
            return None
        decision = await self.runtime.limiter.exhausted(
            f"auth-failures:{address}", self.auth_failure_limit, AUTH_FAILURES_POLICY
        )
        return None if decision is None else (_too_many_failures(decision), decision.headers)

    async def _failed(
        self, scope: Scope, receive: Receive, send: Send, address: str, cors: list[tuple[bytes, bytes]]
    ) -> bool:
        """Count a failed authentication of ``address``; True if it answered 429 (over the limit)."""
        if len(self._suspects) >= MAX_SUSPECTS:
            self._suspects.clear()
        self._suspects[address] = time.monotonic() + self.runtime.limiter.window
        decision = await self.runtime.limiter.admit(
            f"auth-failures:{address}", self.auth_failure_limit, AUTH_FAILURES_POLICY
        )
        if decision.allowed:
            return False
        await send_problem(scope, receive, send, _too_many_failures(decision), decision.headers + cors)
        return True

    async def _preflight(self, send: Send, origin: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    (b"access-control-allow-origin", origin),
                    (b"access-control-allow-methods", CORS_ALLOW_METHODS),
                    (b"access-control-allow-headers", CORS_ALLOW_HEADERS),
                    (b"access-control-max-age", self.cors_max_age),
                    (b"vary", b"Origin"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _address(scope: Scope) -> str:
    """The client's address: the peer, or what a trusted proxy said (gateway.app applies
    uvicorn's ProxyHeadersMiddleware with GATEWAY_TRUSTED_PROXIES before this runs)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _too_many_failures(decision: Decision) -> Problem:
    return Problem(
        429,
        "Too Many Requests",
        "Too many failed authentications from this address; "
        f"retry in {decision.retry_after_seconds} s with a valid credential.",
        type="rate-limited",
    )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _with_headers(send: Send, headers: Iterable[tuple[bytes, bytes]]) -> Send:
    extra = list(headers)

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return send_with_headers


def _limited(receive: Receive, limit: int) -> Receive:
    """A receive that fails with 413 once the body passes ``limit``."""
    size = 0

    async def receive_limited() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                # An HTTPException, so FastAPI's body parsing passes it on (as problem+json 413).
                raise HTTPException(
                    413, f"The request body is larger than this route accepts ({limit} bytes)."
                )
        return message

    return receive_limited
