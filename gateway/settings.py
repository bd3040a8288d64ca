"""Settings of the gateway (environment prefix ``GATEWAY_``, plus the system-wide ones)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.settings import BaseAppSettings, weak_secret

# Asymmetric algorithms only: a symmetric one would let anyone holding the IdP's public
# JWKS forge tokens (the HS256-with-public-key confusion), and "none" is no signature at all.
SAFE_OIDC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _list_from_env(value: Any) -> Any:
    """``a,b`` or ``["a", "b"]`` from the environment; lists as they are."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


# A list setting written either as JSON or comma-separated in the environment.
EnvList = Annotated[list[str], NoDecode, BeforeValidator(_list_from_env)]
EnvFloats = Annotated[list[float], NoDecode, BeforeValidator(_list_from_env)]


class GatewaySettings(BaseAppSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", validate_default=True)
    service_name: ClassVar[str] = "gateway"

    enterprises_url: str = "http://127.0.0.1:8001"
    demand_url: str = "http://127.0.0.1:8002"
    mentoring_url: str = "http://127.0.0.1:8003"
    bootstrap_staff_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SEEDBED_BOOTSTRAP_STAFF_KEY", "bootstrap_staff_key")
    )

    # Upstream calls: a bounded connect, and a bound on the wait for each chunk of the
    # answer (not on the whole exchange, so a large export can stream for longer).
    upstream_timeout_seconds: float = 10.0
    upstream_connect_timeout_seconds: float = 2.0
    upstream_connections: int = 256
    # Below uvicorn's 5 s keep-alive, so the gateway never reuses a socket the service closed.
    upstream_keepalive_seconds: float = 4.0
    upstream_retries: int = 2

    # API keys: the pepper keys the HMAC the key table stores (see gateway.keys).
    api_key_pepper: SecretStr = SecretStr("")
    # How long a verified credential is trusted from memory; revocations are broadcast over
    # NATS at once, this bounds how long a lost broadcast could keep a revoked key alive.
    credential_cache_seconds: float = 30.0
    credential_cache_size: int = 10_000

    # OIDC bearer tokens from a portal's identity provider.
    oidc_issuer: str | None = None
    oidc_audience: EnvList = Field(default_factory=list)
    oidc_jwks_url: str | None = None
    oidc_jwks_file: Path | None = None
    oidc_algorithms: EnvList = Field(default_factory=lambda: ["RS256", "ES256"])
    oidc_role_claim: str = "seedbed_role"  # dotted path into the claims, e.g. "realm_access.roles"
    oidc_subject_id_claim: str = "seedbed_subject_id"
    oidc_role_map: dict[str, str] = Field(default_factory=dict)  # IdP value -> Seedbed role
    oidc_leeway_seconds: float = 30.0
    oidc_jwks_refresh_seconds: float = 3600.0
    oidc_jwks_min_refresh_seconds: float = 60.0  # an unknown kid refetches at most this often

    # Limits.
    rate_limit_per_minute: int = 600
    staff_rate_limit_per_minute: int = 6000
    public_rate_limit_per_minute: int = 120  # per client address, for credential-less feeds
    # Failed authentications per client address; past it every credentialed request from that
    # address answers 429 (a right guess too, or the limit would not stop guessing).
    auth_failure_limit_per_minute: int = Field(30, ge=1)
    # Where the limits' counters live: "local" (per replica), "nats" (a JetStream KeyValue
    # bucket all replicas share), "auto" (nats unless the database is SQLite); gateway.limits.
    rate_limit_store: Literal["auto", "local", "nats"] = "auto"
    # Proxies (addresses or CIDR networks) whose X-Forwarded-For / X-Forwarded-Proto are
    # believed; from anyone else they are ignored, so a client cannot pick its own address.
    # The gateway applies this itself: start uvicorn with --no-proxy-headers.
    trusted_proxies: EnvList = Field(default_factory=list)
    max_body_bytes: int = 1024 * 1024
    max_import_body_bytes: int = 50 * 1024 * 1024
    cors_origins: EnvList = Field(default_factory=list)
    cors_max_age_seconds: int = 600

    # Composition and documents.
    dashboard_part_timeout_seconds: float = 3.0
    dashboard_top_matches: int = 5
    dashboard_upcoming_sessions: int = 10
    openapi_refresh_seconds: float = 300.0

    # The event stream of integrators (SEEDBED_EVENTS, sourcing the services' streams).
    events_stream_max_age_days: float = 365.0  # as the services keep theirs
    stream_replicas: int = Field(
        1, validation_alias=AliasChoices("SEEDBED_STREAM_REPLICAS", "stream_replicas")
    )
    # How often the gateway looks for a service stream it does not source yet (and, once all
    # are sourced, checks that the stream is still there).
    events_sources_check_seconds: float = 0.5
    events_stream_check_seconds: float = 30.0
    sse_heartbeat_seconds: float = 15.0
    sse_max_streams_per_credential: int = 10

    # Webhooks. Retries after the first attempt, in seconds (Standard Webhooks' schedule).
    webhook_retry_schedule_seconds: EnvFloats = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    webhook_attempt_timeout_seconds: float = 10.0
    webhook_poll_seconds: float = 1.0  # the dispatcher also wakes at once when deliveries are added
    webhook_batch_size: int = 100
    webhook_concurrency: int = 32
    # Of those, at most this many attempts to one subscription, and to one owner's subscriptions
    # together: a slow receiver holds its own slots, never the other integrators' (gateway.deliveries).
    webhook_concurrency_per_endpoint: int = Field(2, ge=1)
    webhook_concurrency_per_owner: int = Field(8, ge=1)
    # A subscription whose deliveries all failed this many times in a row (each after the whole
    # schedule, about 28 hours) is disabled; 0 never disables.
    webhook_disable_after_failed_deliveries: int = 10
    # Receivers on loopback, private or link-local addresses (SSRF): None allows them outside
    # production only.
    webhook_allow_private_networks: bool | None = None
    webhook_retention_days: float = 30.0
    # Each subscription gets every matching event: bound how many one owner (not staff) may hold.
    webhook_max_subscriptions_per_owner: int = 25
    # Encrypts webhook secrets at rest (AES-GCM); derived from the API key pepper when empty.
    webhook_encryption_key: SecretStr = SecretStr("")

    # Pages for people (gateway.pages): open to anyone unless a key is required.
    pages_require_key: bool = False
    pages_rate_limit_per_minute: int = 600  # per client address
    pages_cache_size: int = Field(512, ge=1)  # pipeline views and rendered pages kept
    pages_lines_max: int = Field(2000, ge=1)  # lines a lines page sorts and pages through
    pages_lines_per_page: int = Field(25, ge=1, le=200)
    pages_lines_cache_seconds: float = 15.0
    pages_anchors_max: int = Field(2000, ge=1)
    pages_anchors_cache_seconds: float = 60.0

    # The AsyncAPI document: the NATS server integrators are told about.
    asyncapi_nats_url: str | None = None  # default: NATS_URL
    asyncapi_refresh_seconds: float = 300.0

    @field_validator("oidc_algorithms")
    @classmethod
    def _only_asymmetric_algorithms(cls, value: list[str]) -> list[str]:
        unsafe = [alg for alg in value if alg not in SAFE_OIDC_ALGORITHMS]
        if unsafe:
            raise ValueError(
                f"refused OIDC algorithms {unsafe}: only asymmetric ones are allowed "
                f"({', '.join(sorted(SAFE_OIDC_ALGORITHMS))})"
            )
        return value

    @model_validator(mode="after")
    def _pepper_outside_development(self) -> GatewaySettings:
        if self.environment != "production":
            return self
        keys = {"GATEWAY_API_KEY_PEPPER": self.api_key_pepper.get_secret_value()}
        if self.webhook_encryption_key.get_secret_value():
            keys["GATEWAY_WEBHOOK_ENCRYPTION_KEY"] = self.webhook_encryption_key.get_secret_value()
        for name, value in keys.items():
            reason = weak_secret(value)
            if reason is not None:
                raise ValueError(
                    f"{name} must be a random value of at least 32 characters in production: {reason}"
                )
        return self

    @model_validator(mode="after")
    def _oidc_complete(self) -> GatewaySettings:
        if self.oidc_enabled and not (self.oidc_issuer and self.oidc_audience):
            raise ValueError("OIDC needs GATEWAY_OIDC_ISSUER and GATEWAY_OIDC_AUDIENCE besides its keys")
        return self

    @field_validator("webhook_retry_schedule_seconds")
    @classmethod
    def _delays_not_negative(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must not be negative")
        return value

    @property
    def webhooks_may_reach_private_networks(self) -> bool:
        if self.webhook_allow_private_networks is not None:
            return self.webhook_allow_private_networks
        return self.environment != "production"

    @property
    def shared_rate_limits(self) -> bool:
        if self.rate_limit_store == "auto":
            return not self.database_url.startswith("sqlite")
        return self.rate_limit_store == "nats"

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_jwks_url or self.oidc_jwks_file)

    def upstreams(self) -> dict[str, str]:
        """Service name -> base URL."""
        return {
            "enterprises": self.enterprises_url.rstrip("/"),
            "demand": self.demand_url.rstrip("/"),
            "mentoring": self.mentoring_url.rstrip("/"),
        }
