"""The signed principal header: only the gateway's fresh signature gets a request in."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request

from shared.principal import (
    HEADER,
    InvalidPrincipal,
    Principal,
    PrincipalDep,
    PrincipalMiddleware,
    body_digest,
    encode_principal,
    sign,
    verify,
)
from shared.problems import install_problem_handlers
from shared.testing.apps import client

SECRET = b"s" * 48


def sign_principal(secret: bytes, method: str, target: str, principal: Principal, body: bytes = b"") -> str:
    """The header the gateway sends for ``principal`` on a request with ``body``."""
    return sign(secret, method, target, encode_principal(principal), digest=body_digest(body))


ANCHOR = Principal(role="anchor", subject_id="a1", actor="key-1")


def test_signed_principal_verifies() -> None:
    header = sign_principal(SECRET, "GET", "/api/v1/demand?x=1", ANCHOR)
    assert verify(SECRET, "GET", "/api/v1/demand?x=1", header) == ANCHOR


@pytest.mark.parametrize(
    ("method", "target", "secret"),
    [
        ("POST", "/api/v1/demand?x=1", SECRET),  # another method
        ("GET", "/api/v1/demand/other", SECRET),  # another path
        ("GET", "/api/v1/demand?x=2", SECRET),  # another query
        ("GET", "/api/v1/demand?x=1", b"t" * 48),  # another key
    ],
)
def test_header_does_not_verify_for_another_request_or_key(method: str, target: str, secret: bytes) -> None:
    header = sign_principal(SECRET, "GET", "/api/v1/demand?x=1", ANCHOR)
    with pytest.raises(InvalidPrincipal):
        verify(secret, method, target, header)


def test_expired_header_is_refused() -> None:
    header = sign_principal(SECRET, "GET", "/x", ANCHOR)
    timestamp = int(header.split(".")[1])
    with pytest.raises(InvalidPrincipal, match="expired"):
        verify(SECRET, "GET", "/x", header, max_age=30, now=timestamp + 31)
    assert verify(SECRET, "GET", "/x", header, max_age=30, now=timestamp + 29) == ANCHOR


def test_tampered_payload_is_refused() -> None:
    header = sign_principal(SECRET, "GET", "/x", ANCHOR)
    staff = sign_principal(SECRET, "GET", "/y", Principal(role="staff", actor="k"))
    forged = ".".join([staff.split(".")[0], *header.split(".")[1:]])
    with pytest.raises(InvalidPrincipal):
        verify(SECRET, "GET", "/x", forged)


@pytest.mark.parametrize("value", ["", "abc", "a.b", "a.notanumber.c", "a.1.b.c"])
def test_malformed_header_is_refused(value: str) -> None:
    with pytest.raises(InvalidPrincipal):
        verify(SECRET, "GET", "/x", value)


def test_ownership() -> None:
    assert ANCHOR.owns("anchor", "a1")
    assert not ANCHOR.owns("anchor", "a2")
    assert not ANCHOR.owns("enterprise", "a1")
    assert not Principal(role="staff", actor="k").owns("anchor", "None")


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/api/v1/whoami")
    async def whoami(principal: PrincipalDep) -> dict[str, str | None]:
        return {"role": principal.role, "subject_id": principal.subject_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(PrincipalMiddleware, secret=SECRET)
    return app


async def test_middleware_passes_the_principal_and_refuses_unsigned_requests() -> None:
    app = make_app()
    async with client(app, ANCHOR, secret=SECRET.decode()) as http:
        signed = await http.get("/api/v1/whoami", params={"q": "é x"})
    async with client(app, None) as http:
        unsigned = await http.get("/api/v1/whoami")
        health = await http.get("/healthz")
    assert signed.status_code == 200 and signed.json() == {"role": "anchor", "subject_id": "a1"}
    assert unsigned.status_code == 401
    assert unsigned.headers["content-type"] == "application/problem+json"
    assert "gateway" in unsigned.json()["detail"]
    assert health.status_code == 200


def test_header_signed_for_one_body_does_not_verify_for_another() -> None:
    header = sign_principal(SECRET, "POST", "/api/v1/demand", ANCHOR, b'{"title": "Meals"}')
    assert verify(SECRET, "POST", "/api/v1/demand", header, body=b'{"title": "Meals"}') == ANCHOR
    with pytest.raises(InvalidPrincipal, match="body"):
        verify(SECRET, "POST", "/api/v1/demand", header, body=b'{"title": "Something else"}')


def body_app(written: list[bytes]) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/api/v1/things")
    async def make(request: Request, principal: PrincipalDep) -> dict[str, str]:
        written.append(await request.body())  # as a use case's write would
        return {"role": principal.role}

    @app.post("/api/v1/streamed")
    async def streamed(request: Request, principal: PrincipalDep) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        written.append(b"streamed")
        return {"size": size}

    @app.post("/api/v1/unread")
    async def unread(principal: PrincipalDep) -> dict[str, str]:
        return {"role": principal.role}

    app.add_middleware(PrincipalMiddleware, secret=SECRET)
    return app


@pytest.mark.parametrize("path", ["/api/v1/things", "/api/v1/streamed", "/api/v1/unread"])
async def test_a_captured_header_sent_again_with_another_body_is_refused(path: str) -> None:
    written: list[bytes] = []
    app = body_app(written)
    original = b'{"name": "the body the gateway signed"}'
    header = sign_principal(SECRET, "POST", path, ANCHOR, original)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as http:
        accepted = await http.post(path, content=original, headers={HEADER: header})
        replayed = await http.post(path, content=b'{"name": "another body"}', headers={HEADER: header})
    assert accepted.status_code == 200, accepted.text
    assert replayed.status_code == 401, replayed.text
    assert replayed.headers["content-type"] == "application/problem+json"
    assert "body" in replayed.json()["detail"]
    assert len(written) == (0 if path.endswith("unread") else 1)  # the replay wrote nothing


async def test_signed_requests_with_bodies_pass_through_the_client_auth() -> None:
    written: list[bytes] = []
    async with client(body_app(written), ANCHOR, secret=SECRET.decode()) as http:
        answer = await http.post("/api/v1/things", json={"name": "x" * 100_000})
    assert answer.status_code == 200, answer.text
    assert len(written[0]) > 100_000
