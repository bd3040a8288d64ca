"""Tables of the enterprises service (its own database)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from shared.db import BigIntegerKey, UtcDateTime, new_metadata
from shared.migrations import include_kit_tables

metadata = new_metadata()
include_kit_tables(metadata)

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

cohorts = sa.Table(
    "cohorts",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("programme", sa.String(200), nullable=False),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("end_date >= start_date", name="ends_after_start"),
)
sa.Index("ix_cohorts_created_at_id", cohorts.c.created_at, cohorts.c.id)

enterprises = sa.Table(
    "enterprises",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("legal_form", sa.String(40), nullable=False),
    sa.Column("registration_number", sa.String(20), nullable=True),
    sa.Column("postcode", sa.String(8), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("cohort_id", sa.Uuid, sa.ForeignKey("cohorts.id"), nullable=True),
    sa.Column("cpv_codes", Json, nullable=False),
    sa.Column("max_contract_value_pence", sa.BigInteger, nullable=True),
    sa.Column("employees", sa.Integer, nullable=True),
    sa.Column("turnover_pence", sa.BigInteger, nullable=True),
    sa.Column("vcse", sa.Boolean, nullable=False),
    sa.Column("handles_personal_data", sa.Boolean, nullable=False),
    sa.Column("works_with_public", sa.Boolean, nullable=False),
    sa.Column("works_with_vulnerable_people", sa.Boolean, nullable=False),
    sa.Column("provides_professional_advice", sa.Boolean, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("website", sa.String(300), nullable=True),
    sa.Column("size_class", sa.String(10), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # The last overall readiness announced (readiness.changed), to tell when it changes.
    sa.Column("readiness_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("readiness_digest", sa.String(64), nullable=True),
    sa.Column("readiness_score", sa.Float, nullable=True),
    sa.Column("readiness_ready", sa.Boolean, nullable=True),
    sa.Column("readiness_stale", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint("employees >= 0", name="employees_not_negative"),
    sa.CheckConstraint("turnover_pence >= 0", name="turnover_not_negative"),
    sa.CheckConstraint("max_contract_value_pence >= 0", name="capacity_not_negative"),
)
sa.Index("ix_enterprises_created_at_id", enterprises.c.created_at, enterprises.c.id)
# Each common filter walks its own index in page order.
for _column in ("stage", "cohort_id", "legal_form"):
    sa.Index(
        f"ix_enterprises_{_column}_created_at_id",
        enterprises.c[_column],
        enterprises.c.created_at,
        enterprises.c.id,
    )
sa.Index(
    "uq_enterprises_registration_number",
    enterprises.c.registration_number,
    unique=True,
    sqlite_where=enterprises.c.registration_number.is_not(None),
    postgresql_where=enterprises.c.registration_number.is_not(None),
)
sa.Index(
    "ix_enterprises_readiness_stale",
    enterprises.c.id,
    sqlite_where=enterprises.c.readiness_stale.is_(True),
    postgresql_where=enterprises.c.readiness_stale.is_(True),
)

# The 8 digits of each CPV code an enterprise supplies, for prefix filters.
enterprise_cpv_codes = sa.Table(
    "enterprise_cpv_codes",
    metadata,
    sa.Column(
        "enterprise_id", sa.Uuid, sa.ForeignKey("enterprises.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("code", sa.String(8), primary_key=True),
)
sa.Index("ix_enterprise_cpv_codes_code", enterprise_cpv_codes.c.code)

milestone_definitions = sa.Table(
    "milestone_definitions",
    metadata,
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("category", sa.String(20), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applies_when", Json, nullable=False),
    sa.Column("threshold_pence", sa.BigInteger, nullable=True),
    sa.Column("validity_days", sa.Integer, nullable=True),
    sa.Column("core", sa.Boolean, nullable=False),
    sa.Column("builtin", sa.Boolean, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("updated_at", UtcDateTime, nullable=True),
    sa.Column("updated_by", sa.String(200), nullable=True),
)

# The columns of a verification that are kept as the standing one during a renewal.
STANDING_FIELDS = (
    "evidence",
    "value_pence",
    "expires_at",
    "submitted_at",
    "submitted_by_role",
    "submitted_by_actor",
    "submitted_by_subject",
    "verified_at",
    "verified_by_role",
    "verified_by_actor",
    "verified_by_subject",
)
_STANDING_TYPES = {
    "evidence": Json,
    "value_pence": sa.BigInteger(),
    "expires_at": UtcDateTime(),
    "submitted_at": UtcDateTime(),
    "verified_at": UtcDateTime(),
    "submitted_by_role": sa.String(20),
    "verified_by_role": sa.String(20),
    "submitted_by_actor": sa.String(200),
    "verified_by_actor": sa.String(200),
    "submitted_by_subject": sa.String(64),
    "verified_by_subject": sa.String(64),
}

enterprise_milestones = sa.Table(
    "enterprise_milestones",
    metadata,
    sa.Column(
        "enterprise_id", sa.Uuid, sa.ForeignKey("enterprises.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("code", sa.String(64), sa.ForeignKey("milestone_definitions.code"), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("evidence", Json, nullable=True),
    sa.Column("value_pence", sa.BigInteger, nullable=True),
    sa.Column("expires_at", UtcDateTime, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("submitted_at", UtcDateTime, nullable=True),
    sa.Column("submitted_by_role", sa.String(20), nullable=True),
    sa.Column("submitted_by_actor", sa.String(200), nullable=True),
    sa.Column("submitted_by_subject", sa.String(64), nullable=True),
    sa.Column("verified_at", UtcDateTime, nullable=True),
    sa.Column("verified_by_role", sa.String(20), nullable=True),
    sa.Column("verified_by_actor", sa.String(200), nullable=True),
    sa.Column("verified_by_subject", sa.String(64), nullable=True),
    # Set when the expiry warning for the current verification went out (exactly once).
    sa.Column("expiry_warned", sa.Boolean, nullable=False, server_default=sa.false()),
    # The standing verification: what was verified, kept while an early resubmission (a renewal)
    # awaits review. Set exactly when standing_verified_at is set; cleared when the renewal is
    # verified, rejected (the milestone goes back to this verification) or when it lapses.
    *(sa.Column(f"standing_{name}", _STANDING_TYPES[name], nullable=True) for name in STANDING_FIELDS),
    sa.Column("standing_expiry_warned", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("value_pence >= 0", name="value_not_negative"),
)
sa.Index(
    "ix_enterprise_milestones_verified_expiry",
    enterprise_milestones.c.expires_at,
    sqlite_where=enterprise_milestones.c.status == "verified",
    postgresql_where=enterprise_milestones.c.status == "verified",
)
sa.Index(
    "ix_enterprise_milestones_standing_expiry",
    enterprise_milestones.c.standing_expires_at,
    sqlite_where=enterprise_milestones.c.standing_verified_at.is_not(None),
    postgresql_where=enterprise_milestones.c.standing_verified_at.is_not(None),
)

# Who changed what and when, for every enterprise and milestone change.
history = sa.Table(
    "history",
    metadata,
    sa.Column("id", BigIntegerKey, primary_key=True, autoincrement=True),
    sa.Column("enterprise_id", sa.Uuid, sa.ForeignKey("enterprises.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor_role", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("actor_subject", sa.String(64), nullable=True),
    sa.Column("milestone_code", sa.String(64), nullable=True),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("changes", Json, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
)
sa.Index("ix_history_enterprise_id_id", history.c.enterprise_id, history.c.id)

# Read model of completed mentoring sessions (from the mentoring service's events): the hours
# behind an enterprise's milestones, for the impact report.
mentoring_sessions = sa.Table(
    "mentoring_sessions",
    metadata,
    sa.Column("session_id", sa.Uuid, primary_key=True),
    sa.Column("sequence", sa.Integer, nullable=False),
    sa.Column("enterprise_id", sa.Uuid, nullable=False, index=True),
    sa.Column("mentor_id", sa.Uuid, nullable=False),
    sa.Column("starts_at", UtcDateTime, nullable=False),
    sa.Column("ends_at", UtcDateTime, nullable=False),
    sa.Column("completed_at", UtcDateTime, nullable=False),
    sa.Column("milestone_code", sa.String(64), nullable=True),
    sa.Column("signed_off_milestones", Json, nullable=False),
)

# Read model of public demand lines' requirements (from the demand service's events).
demand_lines = sa.Table(
    "demand_lines",
    metadata,
    sa.Column("demand_id", sa.Uuid, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("title", sa.String(500), nullable=True),
    sa.Column("requirements", Json, nullable=False),
    sa.Column("withdrawn", sa.Boolean, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # What the impact report reads of a line; delivery_area is the area's label.
    sa.Column("anchor_id", sa.Uuid, nullable=True),
    sa.Column("estimated_value_pence", sa.BigInteger, nullable=True),
    sa.Column("cpv_codes", Json, nullable=True),
    sa.Column("delivery_area", sa.String(200), nullable=True),
    sa.Column("first_published_at", UtcDateTime, nullable=True),
    # The award (demand.item.awarded), kept by its own version: null until one is heard.
    sa.Column("awarded_enterprise_id", sa.Uuid, nullable=True),
    sa.Column("awarded_registration_number", sa.String(20), nullable=True),
    sa.Column("awarded_supplier_name", sa.String(200), nullable=True),
    sa.Column("awarded_value_pence", sa.BigInteger, nullable=True),
    sa.Column("awarded_on", sa.Date, nullable=True),
    sa.Column("award_version", sa.Integer, nullable=True),
)
sa.Index("ix_demand_lines_anchor_id", demand_lines.c.anchor_id)

# An enterprise's bid on a public demand line: one per enterprise and line.
bids = sa.Table(
    "bids",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("enterprise_id", sa.Uuid, sa.ForeignKey("enterprises.id", ondelete="CASCADE"), nullable=False),
    sa.Column("demand_id", sa.Uuid, nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("partners", Json, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("contract_value_pence", sa.BigInteger, nullable=True),
    sa.Column("submitted_at", UtcDateTime, nullable=True),
    sa.Column("decided_at", UtcDateTime, nullable=True),
    sa.Column("award_check", sa.String(20), nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.UniqueConstraint("enterprise_id", "demand_id"),
    sa.CheckConstraint("contract_value_pence >= 0", name="contract_value_not_negative"),
)
sa.Index("ix_bids_created_at_id", bids.c.created_at, bids.c.id)
sa.Index("ix_bids_enterprise_id_created_at_id", bids.c.enterprise_id, bids.c.created_at, bids.c.id)
sa.Index("ix_bids_demand_id_created_at_id", bids.c.demand_id, bids.c.created_at, bids.c.id)

# Every version of every bid, with who made it.
bid_history = sa.Table(
    "bid_history",
    metadata,
    sa.Column("id", BigIntegerKey, primary_key=True, autoincrement=True),
    sa.Column("bid_id", sa.Uuid, sa.ForeignKey("bids.id", ondelete="CASCADE"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("partners", Json, nullable=False),
    sa.Column("contract_value_pence", sa.BigInteger, nullable=True),
    sa.Column("award_check", sa.String(20), nullable=True),
    sa.Column("actor_role", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("actor_subject", sa.String(64), nullable=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
)
sa.Index("ix_bid_history_bid_id_id", bid_history.c.bid_id, bid_history.c.id)
