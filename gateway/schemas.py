"""Request and response models of the gateway's own endpoints (the HTTP contract)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KeyRole = Literal["staff", "anchor", "enterprise", "mentor", "integrator"]
SUBJECT_ROLES = ("anchor", "enterprise", "mentor")


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: KeyRole
    subject_id: uuid.UUID | None = Field(
        None, description="The anchor, enterprise or mentor the key acts for; null for staff and integrators."
    )
    name: str = Field(min_length=1, max_length=200, description="What the key is for, for people.")
    rate_limit_per_minute: int | None = Field(
        None, ge=1, le=100_000, description="This key's own request quota; the role's default otherwise."
    )
    expires_at: datetime | None = Field(None, description="When the key stops working; never when null.")

    @field_validator("name")
    @classmethod
    def _name_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a UTC offset")
        return value

    @model_validator(mode="after")
    def _subject_matches_role(self) -> ApiKeyCreate:
        if self.role in SUBJECT_ROLES and self.subject_id is None:
            raise ValueError(f"subject_id is required for the {self.role} role")
        if self.role not in SUBJECT_ROLES and self.subject_id is not None:
            raise ValueError(f"subject_id must be null for the {self.role} role")
        return self


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    prefix: str = Field(description="The visible start of the key, to recognise it (`sbk_<lookup>`).")
    role: KeyRole
    subject_id: str | None
    name: str
    rate_limit_per_minute: int | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself. Shown only in this response; store it now.")


class ApiKeyPage(BaseModel):
    items: list[ApiKeyOut]
    next_cursor: str | None = None


class Me(BaseModel):
    role: str
    subject_id: str | None
    actor: str
    credential: Literal["api_key", "oidc", "bootstrap"]
    key_id: uuid.UUID | None = None
    name: str | None = None
    expires_at: datetime | None = None
    rate_limit_per_minute: int


class DashboardPart(BaseModel):
    status: Literal["ok", "unavailable"]
    data: Any | None = None
    service: str
    detail: str | None = Field(None, description="Why the part is unavailable.")


class Dashboard(BaseModel):
    enterprise_id: uuid.UUID
    generated_at: datetime
    profile: DashboardPart
    readiness: DashboardPart
    top_matches: DashboardPart
    upcoming_sessions: DashboardPart
    unavailable: list[str] = Field(description="The parts that could not be fetched.")
