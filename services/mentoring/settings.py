"""Settings of the mentoring service (environment prefix ``MENTORING_``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class MentoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MENTORING_", extra="ignore", validate_default=True)
    service_name: ClassVar[str] = "mentoring"

    # ``mentoring.session.reminder_due.v1`` this many minutes before each session
    # (``MENTORING_REMINDER_OFFSETS_MINUTES='[1440, 60]'``).
    reminder_offsets_minutes: list[int] = Field(default_factory=lambda: [1440, 60])
    reminder_interval_seconds: float = 30.0
    reminder_batch_size: int = 200
    # An enterprise is an active mentee of a mentor while it has a session with them
    # that is upcoming or started within this many days (not cancelled).
    mentee_active_days: int = 90
    # The calendar feed shows sessions from this many days back.
    feed_past_days: int = 60
    max_slot_range_days: int = 92
    max_multi_slot_range_days: int = 31

    @field_validator("reminder_offsets_minutes")
    @classmethod
    def _positive_distinct(cls, offsets: list[int]) -> list[int]:
        if any(offset <= 0 for offset in offsets):
            raise ValueError("reminder offsets must be positive minutes")
        return sorted(set(offsets), reverse=True)
