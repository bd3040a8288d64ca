"""Tables of the gateway (its own database): API keys and the OIDC principals it has seen."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db import UtcDateTime, new_metadata
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
