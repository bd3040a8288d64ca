"""The signed internal principal header.

The gateway authenticates the caller and forwards the principal to a service in
``X-Seedbed-Principal: <payload>.<timestamp>.<body digest>.<signature>``, where the
signature is HMAC-SHA256 over method, request target (path and query), payload, time and
the SHA-256 of the request body. Services accept a request only with a valid, fresh
header, so nobody reaches a service around the gateway; each service then enforces
ownership of its data. The body is checked against the digest as it is read, before its
last bytes reach the app, and in full before any answer leaves: a captured header sent
again with another body is refused (401).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Generator
from typing import Annotated, Literal

import httpx
from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.problems import Problem, problem_response

HEADER = "x-seedbed-principal"
_HEADER_BYTES = HEADER.encode()

# "public" is nobody signed in; the gateway sends it only for the few routes that
# authenticate by other means (a calendar feed's secret URL).
Role = Literal["staff", "anchor", "enterprise", "mentor", "integrator", "public"]
ROLES: tuple[Role, ...] = ("staff", "anchor", "enterprise", "mentor", "integrator")


class Principal(BaseModel):
    """Who is calling: a role, the object the role is bound to, and the credential used."""

    model_config = ConfigDict(frozen=True)

    role: Role
    subject_id: str | None = None  # the anchor, enterprise or mentor id the role is bound to
    actor: str  # the API key id or the OIDC subject: who did it, for histories

    @property
    def is_staff(self) -> bool:
        return self.role == "staff"

    def owns(self, role: Role, object_id: object) -> bool:
        """True when this principal is bound to exactly that object."""
        return self.role == role and self.subject_id is not None and self.subject_id == str(object_id)


class InvalidPrincipal(Exception):
    pass


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, method: str, target: str, payload: str, timestamp: str, digest: str) -> str:
    message = f"{method}\n{target}\n{payload}\n{timestamp}\n{digest}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def body_digest(body: bytes) -> str:
    """What the header carries of a request body: its SHA-256, base64url without padding."""
    return sha256_digest(hashlib.sha256(body).digest())


def sha256_digest(sha256: bytes) -> str:
    """:func:`body_digest` of a body hashed piece by piece (``hashlib.sha256().digest()``)."""
    return _b64(sha256)


EMPTY_BODY_DIGEST = body_digest(b"")


def encode_principal(principal: Principal) -> str:
    """The payload part of the header; the gateway may cache it per credential."""
    return _b64(principal.model_dump_json(exclude_none=True).encode())


def sign(
    secret: bytes,
    method: str,
    target: str,
    payload: str,
    now: float | None = None,
    *,
    digest: str = EMPTY_BODY_DIGEST,
) -> str:
    """The header value for ``method target`` carrying an encoded principal, for a request
    whose body has ``digest`` (:func:`body_digest`; an empty body by default)."""
    timestamp = str(int(now if now is not None else time.time()))
    return f"{payload}.{timestamp}.{digest}.{_mac(secret, method, target, payload, timestamp, digest)}"


def verify(
    secret: bytes,
    method: str,
    target: str,
    value: str,
    *,
    max_age: float = 30.0,
    now: float | None = None,
    body: bytes | None = None,
) -> Principal:
    """The principal in a header value, or :class:`InvalidPrincipal`; with ``body``, the
    header must have been signed for that body."""
    principal, digest = verify_signed(secret, method, target, value, max_age=max_age, now=now)
    if body is not None and not hmac.compare_digest(digest, body_digest(body)):
        raise InvalidPrincipal(BODY_MISMATCH)
    return principal


BODY_MISMATCH = "the request body is not the one the principal header was signed for"


def verify_signed(
    secret: bytes,
    method: str,
    target: str,
    value: str,
    *,
    max_age: float = 30.0,
    now: float | None = None,
) -> tuple[Principal, str]:
    """The principal in a header value and the body digest it was signed for."""
    try:
        payload, timestamp, digest, mac = value.split(".")
        issued = int(timestamp)
    except ValueError as exc:
        raise InvalidPrincipal("malformed principal header") from exc
    expected = _mac(secret, method, target, payload, timestamp, digest)
    if not hmac.compare_digest(mac, expected):
        raise InvalidPrincipal("bad principal signature")
    current = now if now is not None else time.time()
    if abs(current - issued) > max_age:
        raise InvalidPrincipal("principal header expired")
    try:
        return Principal.model_validate(json.loads(_unb64(payload))), digest
    except (ValueError, ValidationError) as exc:
        raise InvalidPrincipal("malformed principal") from exc


def request_target(scope: Scope) -> str:
    """Path and query exactly as received, the string the gateway signed."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


class PrincipalMiddleware:
    """Pure ASGI: refuse (401) any request without a valid principal header.

    Open paths (health and readiness) need none. The verified principal is put in
    ``scope["state"]["principal"]``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret: bytes,
        max_age: float = 30.0,
        open_paths: frozenset[str] = frozenset({"/healthz", "/readyz"}),
    ) -> None:
        self.app = app
        self.secret = secret
        self.max_age = max_age
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        value = None
        for name, raw in scope["headers"]:
            if name == _HEADER_BYTES:
                value = raw.decode("latin-1")
                break
        try:
            if value is None:
                raise InvalidPrincipal("no principal header: requests must come through the gateway")
            principal, digest = verify_signed(
                self.secret, scope["method"], request_target(scope), value, max_age=self.max_age
            )
        except InvalidPrincipal as exc:
            await _unauthorized(str(exc), scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        body = _SignedBody(digest, receive)
        answer = _HeldUntilBodyChecked(body, scope, receive, send)
        try:
            await self.app(scope, body.receive, answer.send)
        except Exception:
            if not body.mismatch:
                raise
        if body.mismatch and not answer.replaced:
            await answer.refuse()


async def _unauthorized(detail: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem_response(Problem(401, "Unauthorized", detail, type="unauthorized"), scope["path"])
    await response(scope, receive, send)


class _SignedBody:
    """The request body as the app reads it, hashed on the way: its last chunk reaches the app
    only if the whole body has the signed digest (else the app is told the client left)."""

    def __init__(self, digest: str, receive: Receive) -> None:
        self.digest = digest
        self._receive = receive
        self._hash = hashlib.sha256()
        self.complete = False
        self.mismatch = False

    async def receive(self) -> Message:
        if self.mismatch:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request" and not self.complete:
            self._hash.update(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
                if not hmac.compare_digest(_b64(self._hash.digest()), self.digest):
                    self.mismatch = True
                    return {"type": "http.disconnect"}
        return message

    async def read_rest(self) -> None:
        """Read (and check) what the app left unread of the body."""
        while not (self.complete or self.mismatch):
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return


class _HeldUntilBodyChecked:
    """The app's answer, let out only once the body is known to be the signed one; else 401."""

    def __init__(self, body: _SignedBody, scope: Scope, receive: Receive, send: Send) -> None:
        self.body = body
        self.scope = scope
        self._receive = receive
        self._send = send
        self.replaced = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and not self.body.complete:
            await self.body.read_rest()
        if self.body.mismatch:
            if not self.replaced:
                await self.refuse()
            return
        await self._send(message)

    async def refuse(self) -> None:
        self.replaced = True
        await _unauthorized(BODY_MISMATCH, self.scope, self._receive, self._send)


# Dependencies are async: a plain ``def`` would hop to the threadpool on every request.
async def current_principal(request: Request) -> Principal:
    principal = request.state.principal
    assert isinstance(principal, Principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> object:
    """A dependency that allows only the given roles (403 for the others)."""

    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise Problem(
                403,
                "Forbidden",
                f"This action needs one of the roles: {', '.join(roles)}.",
                type="forbidden",
            )
        return principal

    return Depends(check)


StaffDep = Annotated[Principal, require_roles("staff")]


class PrincipalAuth(httpx.Auth):
    """httpx auth that signs each request with a principal (gateway composite calls, tests)."""

    def __init__(self, secret: bytes, principal: Principal) -> None:
        self.secret = secret
        self.payload = encode_principal(principal)

    requires_request_body = True  # the body's digest is signed

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("latin-1")
        request.headers[HEADER] = sign(
            self.secret, request.method, target, self.payload, digest=body_digest(request.content)
        )
        yield request
