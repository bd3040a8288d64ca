"""Request and response models of the gateway's own endpoints (the HTTP contract)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.visibility import parse_pattern
from shared.http import FromRow, columns

KeyRole = Literal["staff", "anchor", "enterprise", "mentor", "integrator"]
SUBJECT_ROLES = ("anchor", "enterprise", "mentor")
# Expiries lie well inside the calendar, whose ends overflow when a time is converted to UTC.
EXPIRY_RANGE = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


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
        if value is not None and not EXPIRY_RANGE[0] <= value < EXPIRY_RANGE[1]:
            raise ValueError("must be from 1970-01-01 and before 2200-01-01")
        return value

    @model_validator(mode="after")
    def _subject_matches_role(self) -> ApiKeyCreate:
        if self.role in SUBJECT_ROLES and self.subject_id is None:
            raise ValueError(f"subject_id is required for the {self.role} role")
        if self.role not in SUBJECT_ROLES and self.subject_id is not None:
            raise ValueError(f"subject_id must be null for the {self.role} role")
        return self


class ApiKeyOut(FromRow):
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


# -- webhooks ---------------------------------------------------------------------------------

WebhookStatus = Literal["pending", "delivered", "failed"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2000,
        description="Where to POST the events: https (http outside production); a public address.",
        examples=["https://hooks.example/seedbed"],
    )
    types: list[str] = Field(
        min_length=1,
        max_length=50,
        description=(
            "Event type patterns: exact types (`demand.item.published.v1`), prefixes ending in `.*` "
            "(`demand.*`), or `*` for every event the caller's role may see."
        ),
        examples=[["demand.item.*"]],
    )
    description: str | None = Field(
        None, max_length=500, description="What the subscription is for, for people."
    )

    @field_validator("types")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(str(parse_pattern(text)) for text in value))


class WebhookUpdate(BaseModel):
    """Only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    active: bool | None = Field(
        None,
        description=(
            "false pauses the subscription (no delivery is queued for it while paused); true resumes "
            "it, also after it was disabled for failed deliveries."
        ),
    )
    description: str | None = Field(None, max_length=500)

    @field_validator("active")
    @classmethod
    def _not_null(cls, value: bool | None) -> bool | None:
        if value is None:
            raise ValueError("must be true or false")
        return value


class WebhookOwner(FromRow):
    role: str = Field(validation_alias="owner_role")
    subject_id: str | None = Field(validation_alias="owner_subject_id")
    actor: str = Field(validation_alias="owner_actor")


class WebhookOut(FromRow):
    id: uuid.UUID
    url: str
    types: list[str]
    description: str | None
    active: bool = Field(description="False once disabled after failed deliveries in a row.")
    disabled_at: datetime | None
    disabled_reason: str | None
    consecutive_failures: int = Field(description="Deliveries that failed in a row (after every retry).")
    owner: WebhookOwner
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _owner_from_the_same_row(cls, row: Any) -> Any:
        fields = columns(row)
        return fields if "owner_role" not in fields else {**fields, "owner": fields}


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description=(
            "The signing secret (`whsec_...`): verify `webhook-signature` with it (Standard Webhooks). "
            "Shown only in this response; store it now."
        )
    )


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None = None


class DeliveryAttempt(FromRow):
    attempted_at: datetime
    duration_ms: int
    status_code: int | None = Field(description="What the receiver answered; null when it did not answer.")
    error: str | None


class Delivery(FromRow):
    id: uuid.UUID
    event_id: str = Field(description="The event id, sent as `webhook-id` on every attempt.")
    event_type: str
    status: WebhookStatus
    attempts: int
    next_attempt_at: datetime | None = Field(description="When the next attempt is due (pending only).")
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[DeliveryAttempt] = Field(description="Every attempt, oldest first.")

    @model_validator(mode="after")
    def _due_only_while_pending(self) -> Delivery:
        if self.status != "pending":
            self.next_attempt_at = None
        return self


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None = None
