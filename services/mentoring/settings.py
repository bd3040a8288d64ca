"""Settings of the mentoring service (environment prefix ``MENTORING_``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class MentoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MENTORING_", extra="ignore", validate_default=True)
    service_name: ClassVar[str] = "mentoring"
