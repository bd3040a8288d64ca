"""Tables of the gateway (its own database): API keys, the OIDC principals it has seen, webhooks."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db import BigIntegerKey, UtcDateTime, new_metadata
from shared.migrations import include_kit_tables

metadata = new_metadata()
include_kit_tables(metadata)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    # The visible part of the key ("sbk_<lookup>_..."), unique: finds the row to compare.
    sa.Column("lookup", sa.String(32), nullable=False, unique=True),
    # HMAC-SHA256 of the whole key under the server's pepper (hex); never the key itself.
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("subject_id", sa.String(64), nullable=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("rate_limit_per_minute", sa.Integer, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=True),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    sa.Column("revoked_by", sa.String(200), nullable=True),
    sa.CheckConstraint(
        "role IN ('staff', 'anchor', 'enterprise', 'mentor', 'integrator')", name="role_known"
    ),
)
sa.Index("ix_api_keys_created_at_id", api_keys.c.created_at, api_keys.c.id)

# Every OIDC identity that has called the API, with the principal its claims mapped to:
# who did what in the services' histories ("actor") resolves here.
oidc_principals = sa.Table(
    "oidc_principals",
    metadata,
    sa.Column("issuer", sa.String(500), primary_key=True),
    sa.Column("subject", sa.String(255), primary_key=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("subject_id", sa.String(64), nullable=True),
    sa.Column("first_seen_at", UtcDateTime, nullable=False),
    sa.Column("last_seen_at", UtcDateTime, nullable=False),
)

# Webhook subscriptions of integrators, anchors and staff. The owner is who may list and delete
# it (see gateway.webhooks); the API key that made it, if one did, must stay valid for it to
# deliver. The secret is stored encrypted (it must be read back to sign), never returned again.
webhook_subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("owner_role", sa.String(20), nullable=False),
    sa.Column("owner_subject_id", sa.String(64), nullable=True),
    sa.Column("owner_actor", sa.String(200), nullable=False),
    sa.Column("owner_key_id", sa.Uuid, nullable=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("types", sa.JSON, nullable=False),  # type patterns, see gateway.visibility
    sa.Column("description", sa.String(500), nullable=True),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("disabled_at", UtcDateTime, nullable=True),
    sa.Column("disabled_reason", sa.String(500), nullable=True),
)
sa.Index(
    "ix_webhook_subscriptions_created_at_id", webhook_subscriptions.c.created_at, webhook_subscriptions.c.id
)

# Each event that matched at least one subscription, stored once for all its deliveries.
webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("event_type", sa.String(255), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False, index=True),
    # The trace the event came in (its fan-out's), so that each delivery attempt joins it.
    sa.Column("trace_context", sa.String(512), nullable=True),
)

# One event for one subscription: pending until a 2xx (delivered) or the end of the retry
# schedule (failed). ``next_attempt_at`` is when it is due; a dispatcher that claims it moves
# that past the attempt (a lease) and writes its ``claim_token``.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column(
        "subscription_id",
        sa.Uuid,
        sa.ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("event_id", sa.String(64), sa.ForeignKey("webhook_events.event_id"), nullable=False),
    sa.Column("event_type", sa.String(255), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retries_used", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=True),
    sa.Column("claim_token", sa.Uuid, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("last_attempt_at", UtcDateTime, nullable=True),
    sa.Column("delivered_at", UtcDateTime, nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.String(1000), nullable=True),
    sa.UniqueConstraint("subscription_id", "event_id"),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
)
sa.Index(
    "ix_webhook_deliveries_due",
    webhook_deliveries.c.next_attempt_at,
    sqlite_where=webhook_deliveries.c.status == "pending",
    postgresql_where=webhook_deliveries.c.status == "pending",
)
sa.Index(
    "ix_webhook_deliveries_subscription_created",
    webhook_deliveries.c.subscription_id,
    webhook_deliveries.c.created_at,
    webhook_deliveries.c.id,
)
sa.Index("ix_webhook_deliveries_event_id", webhook_deliveries.c.event_id)

# The delivery log: every attempt, with what the receiver answered (or why it could not).
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", BigIntegerKey, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        sa.Uuid,
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("attempted_at", UtcDateTime, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.String(1000), nullable=True),
)
sa.Index("ix_webhook_attempts_delivery_id_id", webhook_attempts.c.delivery_id, webhook_attempts.c.id)
