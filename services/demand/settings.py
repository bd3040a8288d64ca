"""Settings of the demand service (environment prefix ``DEMAND_``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class DemandSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMAND_", extra="ignore", validate_default=True)
    service_name: ClassVar[str] = "demand"
