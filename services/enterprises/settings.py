"""Settings of the enterprises service (environment prefix ``ENTERPRISES_``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class EnterprisesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ENTERPRISES_", extra="ignore", validate_default=True)
    service_name: ClassVar[str] = "enterprises"
