"""Settings base shared by the services and the gateway (pydantic-settings)."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "seedbed-development-only-secret"  # noqa: S105 - refused outside development


MIN_SECRET_LENGTH = 32
# Below what 32 random hex digits ever score (their lowest of 100,000 draws scored 94.7).
MIN_SECRET_BITS = 90.0


def weak_secret(value: str) -> str | None:
    """Why ``value`` is too weak to key an HMAC in production, or None: shorter than 32
    characters, one piece repeated, or too little variety (its characters' Shannon entropy
    times its length, an estimate: 32 x ``a`` scores 0, ``password`` x 4 scores 88)."""
    if value == DEVELOPMENT_SECRET:
        return "it is the development default"
    if len(value) < MIN_SECRET_LENGTH:
        return f"it is shorter than {MIN_SECRET_LENGTH} characters"
    hint = " (make one with e.g. `openssl rand -base64 48`)"
    if (value + value).find(value, 1) < len(value):
        return "it is one piece repeated" + hint
    counts = Counter(value).values()
    bits = -sum(n * math.log2(n / len(value)) for n in counts)
    if bits < MIN_SECRET_BITS:
        return "it has too little variety to be random" + hint
    return None


def var_dir() -> Path:
    """Where the embedded deployment keeps its data (SQLite files, NATS store, keys)."""
    return Path(os.environ.get("SEEDBED_VAR_DIR", "var"))


class BaseAppSettings(BaseSettings):
    """What every Seedbed process reads from the environment.

    Subclasses set ``model_config`` with their own ``env_prefix`` (``DEMAND_``...)
    and ``service_name``; the few settings shared by the whole system
    (``NATS_URL``, ``SEEDBED_INTERNAL_SECRET``...) are read without a prefix.
    """

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)
    service_name: ClassVar[str] = "seedbed"

    environment: Literal["development", "test", "production"] = Field(
        "development", validation_alias=AliasChoices("SEEDBED_ENVIRONMENT", "environment")
    )
    database_url: str = ""
    db_pool_size: int = 10
    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias=AliasChoices("NATS_URL", "nats_url"))
    internal_secret: SecretStr = Field(
        SecretStr(DEVELOPMENT_SECRET),
        validation_alias=AliasChoices("SEEDBED_INTERNAL_SECRET", "internal_secret"),
    )
    internal_header_max_age_seconds: float = 30.0
    # A server that stops answering is taken for gone after about interval x (pings + 1)
    # seconds, and the client reconnects (nats-py's defaults, 120 s x 2, left it for minutes).
    nats_ping_interval_seconds: float = Field(
        2.0,
        gt=0,
        validation_alias=AliasChoices("SEEDBED_NATS_PING_INTERVAL_SECONDS", "nats_ping_interval_seconds"),
    )
    nats_max_outstanding_pings: int = Field(
        2,
        ge=1,
        validation_alias=AliasChoices("SEEDBED_NATS_MAX_OUTSTANDING_PINGS", "nats_max_outstanding_pings"),
    )
    # JetStream drops a message whose Nats-Msg-Id it stored within this window; the outbox
    # relay looks in the stream before publishing a row older than it again.
    stream_duplicate_window_seconds: float = Field(
        300.0,
        gt=0,
        validation_alias=AliasChoices(
            "SEEDBED_STREAM_DUPLICATE_WINDOW_SECONDS", "stream_duplicate_window_seconds"
        ),
    )
    log_level: str = Field("INFO", validation_alias=AliasChoices("SEEDBED_LOG_LEVEL", "log_level"))
    access_log: bool = Field(True, validation_alias=AliasChoices("SEEDBED_ACCESS_LOG", "access_log"))
    # Per-request HTTP metrics (the rest of /metrics is read at scrape time and stays).
    http_metrics: bool = Field(True, validation_alias=AliasChoices("SEEDBED_HTTP_METRICS", "http_metrics"))

    @model_validator(mode="after")
    def _defaults_and_secrets(self) -> BaseAppSettings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{var_dir() / self.service_name}.db"
        if self.environment == "production":
            reason = weak_secret(self.internal_secret.get_secret_value())
            if reason is not None:
                raise ValueError(
                    "SEEDBED_INTERNAL_SECRET must be set to a random value of at least 32 characters "
                    f"in production: {reason}"
                )
        return self


class ServiceSettings(BaseAppSettings):
    """Settings of one domain service (enterprises, demand, mentoring)."""

    outbox_batch_size: int = 500
    outbox_sweep_seconds: float = 1.0
    outbox_retention_days: float = 7.0
    consumer_max_deliver: int = 5
    stream_max_age_days: float = 365.0
    stream_replicas: int = Field(
        1, validation_alias=AliasChoices("SEEDBED_STREAM_REPLICAS", "stream_replicas")
    )
