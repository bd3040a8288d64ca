"""OIDC bearer tokens: accepted only when signed by a configured key with an allowed algorithm,
for this audience, from this issuer, within their lifetime; every forgery gets 401."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from gateway.auth import list_oidc_principals
from gateway.oidc import TokenRejected, claim_at, map_role
from gateway.settings import GatewaySettings
from gateway.tests.conftest import GatewayFactory, client_of, free_tcp_port, wait_until

ISSUER = "https://id.portal.example/realms/seedbed"
AUDIENCE = "seedbed-api"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    if isinstance(private_key, rsa.RSAPrivateKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key()))
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key()))
    jwk |= {"kid": kid, "use": "sig"}
    if alg:
        jwk["alg"] = alg
    return dict(jwk)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "iat": now,
        "exp": now + 300,
        "seedbed_role": "enterprise",
        "seedbed_subject_id": "3f0a3a39-8a59-4c1a-9a4f-8c0c7f0d1a11",
    }
    return {k: v for k, v in (base | overrides).items() if v is not None}


def token(
    payload: dict[str, Any] | None = None, key: Any = RSA_KEY, alg: str = "RS256", kid: str = "rsa-1"
) -> str:
    return jwt.encode(payload or claims(), key, algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(RSA_KEY, "rsa-1", "RS256"), public_jwk(EC_KEY, "ec-1")]}))
    return path


def oidc_settings(jwks_file: Path, **extra: Any) -> dict[str, Any]:
    return {
        "oidc_issuer": ISSUER,
        "oidc_audience": [AUDIENCE],
        "oidc_jwks_file": jwks_file,
        "oidc_algorithms": ["RS256", "ES256"],
    } | extra


async def me(app: Any, credential: str) -> Any:
    async with client_of(app, credential) as http:
        return await http.get("/api/v1/me")


async def test_a_valid_rs256_token_maps_role_and_subject_from_its_claims(
    gateway_app: GatewayFactory, jwks_file: Path
) -> None:
    async with gateway_app(**oidc_settings(jwks_file)) as app:
        response = await me(app, token())
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["role"], body["subject_id"], body["actor"], body["credential"]) == (
            "enterprise",
            "3f0a3a39-8a59-4c1a-9a4f-8c0c7f0d1a11",
            "oidc:user-123",
            "oidc",
        )
        database = app.state.runtime.database

        async def recorded() -> bool:
            return len(await list_oidc_principals(database)) == 1

        await wait_until(recorded)
        [principal] = await list_oidc_principals(database)
    assert (principal.issuer, principal.subject, principal.role) == (ISSUER, "user-123", "enterprise")


async def test_a_valid_es256_token_is_accepted_and_mapped_through_the_role_map(
    gateway_app: GatewayFactory, jwks_file: Path
) -> None:
    settings = oidc_settings(
        jwks_file, oidc_role_claim="realm_access.roles", oidc_role_map={"seedbed-staff": "staff"}
    )
    payload = claims(seedbed_role=None, realm_access={"roles": ["offline_access", "seedbed-staff"]})
    async with gateway_app(**settings) as app:
        response = await me(app, token(payload, EC_KEY, "ES256", "ec-1"))
    assert response.status_code == 200, response.text
    assert (response.json()["role"], response.json()["subject_id"]) == ("staff", None)


def forged_tokens() -> dict[str, str]:
    good = token()
    header, payload, signature = good.split(".")
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned_header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    hs256_header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    import hashlib
    import hmac

    hs256_signature = b64(hmac.new(public_pem, f"{hs256_header}.{payload}".encode(), hashlib.sha256).digest())
    elevated = b64(json.dumps(claims(seedbed_role="staff")).encode())
    return {
        "alg none": f"{unsigned_header}.{payload}.",
        "alg none with a signature": f"{unsigned_header}.{payload}.{signature}",
        "HS256 signed with the RSA public key": f"{hs256_header}.{payload}.{hs256_signature}",
        "payload changed after signing": f"{header}.{elevated}.{signature}",
        "wrong audience": token(claims(aud="another-api")),
        "wrong issuer": token(claims(iss="https://evil.example")),
        "expired": token(claims(exp=int(time.time()) - 120, iat=int(time.time()) - 600)),
        "not valid yet": token(claims(nbf=int(time.time()) + 600)),
        "no exp": token(claims(exp=None)),
        "no aud": token(claims(aud=None)),
        "unknown kid": token(kid="rotated-away"),
        "signed by a key we do not know, claiming a known kid": token(key=OTHER_RSA_KEY),
        "RS256 header naming the EC key": token(key=RSA_KEY, kid="ec-1"),
        "PS256 against a JWK declared RS256": token(alg="PS256"),
        "ES384 not on the allow-list": jwt.encode(
            claims(), ec.generate_private_key(ec.SECP384R1()), algorithm="ES384", headers={"kid": "ec-1"}
        ),
        "enterprise role without a subject": token(claims(seedbed_subject_id=None)),
        "no Seedbed role": token(claims(seedbed_role="superuser")),
        "two Seedbed roles": token(claims(seedbed_role=["staff", "anchor"])),
        "not a JWT": "abc.def.ghi",
    }


FORGED = forged_tokens()


@pytest.mark.parametrize("attack", list(FORGED))
async def test_token_attacks_get_401_problem(
    gateway_app: GatewayFactory, jwks_file: Path, attack: str
) -> None:
    async with gateway_app(**oidc_settings(jwks_file)) as app:
        response = await me(app, FORGED[attack])
        # The same request with the genuine token works: the refusal is about the attack.
        genuine = await me(app, token())
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert genuine.status_code == 200


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["RS256", "HS512"]])
def test_settings_refuse_symmetric_or_absent_algorithms(algorithms: list[str]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(oidc_algorithms=algorithms)


def test_settings_refuse_oidc_keys_without_issuer_and_audience(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(oidc_jwks_file=tmp_path / "jwks.json")


def test_role_claims_map_to_exactly_one_seedbed_role() -> None:
    assert map_role("mentor", {}) == "mentor"
    assert map_role(["x", "portal-anchor"], {"portal-anchor": "anchor"}) == "anchor"
    with pytest.raises(TokenRejected):
        map_role(["staff", "mentor"], {})
    with pytest.raises(TokenRejected):
        map_role("public", {})  # nobody becomes the credential-less principal through a token
    with pytest.raises(TokenRejected):
        map_role(None, {})
    assert claim_at({"a": {"b": {"c": 1}}}, "a.b.c") == 1
    assert claim_at({"a": 1}, "a.b") is None


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A real HTTP JWKS endpoint whose key set a test can rotate."""
    document: dict[str, Any] = {"keys": [public_jwk(RSA_KEY, "rsa-1", "RS256")]}
    served = {"count": 0}

    async def jwks(_: web.Request) -> web.Response:
        served["count"] += 1
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/jwks.json", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_tcp_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}/jwks.json", {"document": document, "served": served}
    await runner.cleanup()


async def test_keys_from_a_jwks_url_are_refetched_when_a_new_kid_appears(
    gateway_app: GatewayFactory, jwks_server: tuple[str, dict[str, Any]]
) -> None:
    url, state = jwks_server
    settings = {
        "oidc_issuer": ISSUER,
        "oidc_audience": [AUDIENCE],
        "oidc_jwks_url": url,
        "oidc_jwks_min_refresh_seconds": 0.0,
    }
    async with gateway_app(**settings) as app:
        assert (await me(app, token())).status_code == 200
        rotated = token(key=OTHER_RSA_KEY, kid="rsa-2")
        assert (await me(app, rotated)).status_code == 401  # not published yet
        state["document"]["keys"].append(public_jwk(OTHER_RSA_KEY, "rsa-2", "RS256"))
        assert (await me(app, rotated)).status_code == 200
    assert state["served"]["count"] >= 3


async def test_unknown_kids_do_not_hammer_the_identity_provider(
    gateway_app: GatewayFactory, jwks_server: tuple[str, dict[str, Any]]
) -> None:
    url, state = jwks_server
    settings = {"oidc_issuer": ISSUER, "oidc_audience": [AUDIENCE], "oidc_jwks_url": url}
    async with gateway_app(**settings) as app:
        for n in range(20):
            assert (await me(app, token(kid=f"random-{n}"))).status_code == 401
    assert state["served"]["count"] <= 2
