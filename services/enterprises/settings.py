"""Settings of the enterprises service (environment prefix ``ENTERPRISES_``)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class EnterprisesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ENTERPRISES_", extra="ignore", validate_default=True)
    service_name: ClassVar[str] = "enterprises"

    run_jobs: bool = Field(True, description="Run the expiry and readiness jobs in this process")
    expiry_warning_days: float = Field(
        30.0, gt=0, description="milestone.expiring goes out this long before expiry"
    )
    expiry_job_interval_seconds: float = Field(60.0, gt=0)
    expiry_batch_size: int = Field(500, ge=1)
    readiness_job_interval_seconds: float = Field(2.0, gt=0)
    readiness_batch_size: int = Field(1000, ge=1)

    @property
    def expiry_warning(self) -> timedelta:
        return timedelta(days=self.expiry_warning_days)
