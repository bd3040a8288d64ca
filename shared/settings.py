"""Settings base shared by the services and the gateway (pydantic-settings)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "seedbed-development-only-secret"  # noqa: S105 - refused outside development


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
    log_level: str = Field("INFO", validation_alias=AliasChoices("SEEDBED_LOG_LEVEL", "log_level"))
    access_log: bool = Field(True, validation_alias=AliasChoices("SEEDBED_ACCESS_LOG", "access_log"))
    # Per-request HTTP metrics (the rest of /metrics is read at scrape time and stays).
    http_metrics: bool = Field(True, validation_alias=AliasChoices("SEEDBED_HTTP_METRICS", "http_metrics"))

    @model_validator(mode="after")
    def _defaults_and_secrets(self) -> BaseAppSettings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{var_dir() / self.service_name}.db"
        secret = self.internal_secret.get_secret_value()
        if self.environment == "production" and (secret == DEVELOPMENT_SECRET or len(secret) < 32):
            raise ValueError(
                "SEEDBED_INTERNAL_SECRET must be set to a random value of at least 32 characters "
                "outside development"
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
