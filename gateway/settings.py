"""Settings of the gateway (environment prefix ``GATEWAY_``, plus the system-wide ones)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import BaseAppSettings


class GatewaySettings(BaseAppSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", validate_default=True)
    service_name: ClassVar[str] = "gateway"

    enterprises_url: str = "http://127.0.0.1:8001"
    demand_url: str = "http://127.0.0.1:8002"
    mentoring_url: str = "http://127.0.0.1:8003"
    bootstrap_staff_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SEEDBED_BOOTSTRAP_STAFF_KEY", "bootstrap_staff_key")
    )
    upstream_timeout_seconds: float = 10.0

    def upstreams(self) -> dict[str, str]:
        """Service name -> base URL."""
        return {
            "enterprises": self.enterprises_url,
            "demand": self.demand_url,
            "mentoring": self.mentoring_url,
        }
