"""OIDC bearer tokens from a portal's identity provider.

A token is accepted only when: its algorithm is on the allow-list (asymmetric
only, checked again against the kind of key it names), its ``kid`` is one of the
configured keys (a JWKS file, or a JWKS URL refetched on rotation), its
signature verifies, and ``iss``, ``aud``, ``exp`` (and ``nbf`` when present)
hold. The Seedbed role and subject come from configured claims.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from gateway.settings import GatewaySettings
from shared.principal import ROLES

log = logging.getLogger("seedbed.gateway.oidc")

# Which key type (and curve) each allowed algorithm needs: a token cannot pick an
# algorithm its key was not made for.
_KEY_FOR_ALGORITHM: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
SUBJECT_ROLES = frozenset({"anchor", "enterprise", "mentor"})


class TokenRejected(Exception):
    """The token is not acceptable; the message says why (it goes into the 401 detail)."""


@dataclass(frozen=True)
class SigningKey:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own algorithm, when it names one
    key: Any  # the cryptography public key


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str
    subject: str
    role: str
    subject_id: str | None
    expires_at: float  # epoch seconds


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a dotted path (``realm_access.roles``), None when absent."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def map_role(raw: Any, role_map: Mapping[str, str]) -> str:
    """The one Seedbed role named by a claim value (a string or a list of strings)."""
    values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    roles = {role_map.get(v, v) for v in values if isinstance(v, str)} & set(ROLES)
    if not roles:
        raise TokenRejected("the token carries no Seedbed role")
    if len(roles) > 1:
        raise TokenRejected(f"the token maps to several roles ({', '.join(sorted(roles))})")
    return roles.pop()


class JwksKeys:
    """The identity provider's signing keys, from a file or a URL, refreshed on rotation."""

    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient | None) -> None:
        self.settings = settings
        self.http = http
        self._keys: dict[str | None, SigningKey] = {}
        self._loaded_at = 0.0
        self._last_attempt = -1e9
        self._lock = asyncio.Lock()

    async def _fetch(self) -> dict[str, Any]:
        if self.settings.oidc_jwks_file is not None:
            text = await asyncio.to_thread(self.settings.oidc_jwks_file.read_text)
            return dict(json.loads(text))
        assert self.settings.oidc_jwks_url is not None and self.http is not None
        response = await self.http.get(self.settings.oidc_jwks_url, timeout=5.0)
        response.raise_for_status()
        return dict(response.json())

    async def refresh(self, *, force: bool = False) -> None:
        async with self._lock:
            now = time.monotonic()
            if not force and now - self._last_attempt < self.settings.oidc_jwks_min_refresh_seconds:
                return
            self._last_attempt = now
            try:
                document = await self._fetch()
            except Exception as exc:
                log.warning("JWKS not loaded", extra={"error": repr(exc)})
                return
            keys: dict[str | None, SigningKey] = {}
            for data in document.get("keys", []):
                if not isinstance(data, dict) or data.get("use", "sig") != "sig":
                    continue
                if data.get("kty") not in ("RSA", "EC", "OKP"):
                    continue  # never a symmetric ("oct") key
                try:
                    public_key = jwt.PyJWK(data).key
                except jwt.PyJWTError as exc:
                    log.warning("JWKS key skipped", extra={"kid": data.get("kid"), "error": repr(exc)})
                    continue
                kid = data.get("kid")
                keys[kid] = SigningKey(kid, data["kty"], data.get("crv"), data.get("alg"), public_key)
            self._keys = keys
            self._loaded_at = now

    async def key(self, kid: str | None) -> SigningKey:
        stale = time.monotonic() - self._loaded_at > self.settings.oidc_jwks_refresh_seconds
        if stale or kid not in self._keys:
            # An unknown kid may be a rotation: refetch, at most once per the minimum interval.
            await self.refresh()
        if kid is None and kid not in self._keys and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        found = self._keys.get(kid)
        if found is None:
            raise TokenRejected("the token is signed with an unknown key")
        return found


class OidcVerifier:
    def __init__(self, settings: GatewaySettings, http: httpx.AsyncClient | None) -> None:
        self.settings = settings
        self.keys = JwksKeys(settings, http)
        self.allowed = frozenset(settings.oidc_algorithms)
        self.role_map = dict(settings.oidc_role_map)

    async def start(self) -> None:
        await self.keys.refresh(force=True)

    async def verify(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected("the token is not a well-formed JWT") from exc
        algorithm = header.get("alg")
        if algorithm not in self.allowed:
            raise TokenRejected(f"the token's algorithm {algorithm!r} is not accepted")
        kid = header.get("kid")
        key = await self.keys.key(kid if isinstance(kid, str) else None)
        key_type, curve = _KEY_FOR_ALGORITHM[algorithm]
        if key.kty != key_type or (curve and key.crv != curve) or key.alg not in (None, algorithm):
            raise TokenRejected("the token's algorithm does not match its key")
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=settings.oidc_audience,
                issuer=settings.oidc_issuer,
                leeway=settings.oidc_leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenRejected("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected("the token is from another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"the token has no {exc.claim!r} claim") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected("the token's signature or claims are not valid") from exc
        role = map_role(claim_at(claims, settings.oidc_role_claim), self.role_map)
        subject_id = claim_at(claims, settings.oidc_subject_id_claim)
        if role in SUBJECT_ROLES:
            if not isinstance(subject_id, str) or not subject_id:
                raise TokenRejected(f"a {role} token needs the {settings.oidc_subject_id_claim!r} claim")
        else:
            subject_id = None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject or len(subject) > 200:
            raise TokenRejected("the token's 'sub' claim is not a usable identifier")
        return VerifiedToken(
            issuer=str(claims["iss"]),
            subject=subject,
            role=role,
            subject_id=subject_id,
            expires_at=float(claims["exp"]),
        )
