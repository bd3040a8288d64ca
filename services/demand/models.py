"""Tables of the demand service (its own database)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shared.db import BigIntegerKey, UtcDateTime, new_metadata
from shared.migrations import include_kit_tables

metadata = new_metadata()
include_kit_tables(metadata)

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Id = sa.String(36)

anchors = sa.Table(
    "anchors",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("identifiers", Json, nullable=False),
    sa.Column("annual_third_party_spend_pence", sa.BigInteger, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_anchors_name_id", "name", "id"),
)

demand_lines = sa.Table(
    "demand_lines",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("anchor_id", Id, sa.ForeignKey("anchors.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("external_ref", sa.String(100), nullable=True),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("cpv_codes", Json, nullable=False),
    sa.Column("main_cpv", sa.String(8), nullable=False),
    sa.Column("estimated_value_pence", sa.BigInteger, nullable=False),
    sa.Column("min_value_pence", sa.BigInteger, nullable=True),
    sa.Column("max_value_pence", sa.BigInteger, nullable=True),
    sa.Column("category", sa.String(20), nullable=False),
    sa.Column("procurement_method", sa.String(20), nullable=True),
    sa.Column("expected_tender_date", sa.Date, nullable=True),
    sa.Column("contract_start", sa.Date, nullable=True),
    sa.Column("duration_months", sa.Integer, nullable=True),
    sa.Column("lots", Json, nullable=False),
    sa.Column("suitable_for_sme", sa.Boolean, nullable=False),
    sa.Column("suitable_for_vcse", sa.Boolean, nullable=False),
    sa.Column("reprocurement", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("status_reason", sa.String(500), nullable=True),
    sa.Column("visibility", sa.String(20), nullable=False),
    sa.Column("requirements", Json, nullable=False),
    sa.Column("social_value_priorities", Json, nullable=False),
    sa.Column("delivery_area", Json, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # Who made the current version, and how; earlier versions are in demand_line_versions.
    sa.Column("change", sa.String(20), nullable=False, server_default="created"),
    sa.Column("changed_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("changed_by_role", sa.String(20), nullable=False, server_default="staff"),
    sa.Column("changed_fields", Json, nullable=False, server_default=sa.text("'[]'")),
    # Set by the stale-lines job when a draft or planned line's expected tender date passed
    # without an update; cleared by the update that gives it a date again. Not a new version.
    sa.Column("stale_since", UtcDateTime, nullable=True),
    # Whether it left the pipeline and matching then (DEMAND_STALE_LINES_LEAVE_PIPELINE).
    sa.Column("stale_left_pipeline", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("anchor_id", "external_ref"),
    sa.Index("ix_demand_lines_created_at_id", "created_at", "id"),
    sa.Index("ix_demand_lines_anchor_id_created_at", "anchor_id", "created_at"),
    sa.Index("ix_demand_lines_status_visibility", "status", "visibility"),
    sa.Index("ix_demand_lines_expected_tender_date", "expected_tender_date"),
)

# Every CPV code of a line and of its lots (eight digits), for prefix filters and matching.
demand_line_cpvs = sa.Table(
    "demand_line_cpvs",
    metadata,
    sa.Column("line_id", Id, sa.ForeignKey("demand_lines.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("cpv_code", sa.String(8), primary_key=True),
    sa.Index("ix_demand_line_cpvs_cpv_code", "cpv_code"),
)

# The previous versions of every line (the current one is the line itself): the readable history.
demand_line_versions = sa.Table(
    "demand_line_versions",
    metadata,
    sa.Column("line_id", Id, sa.ForeignKey("demand_lines.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("data", Json, nullable=False),
    sa.Column("changed_fields", Json, nullable=False),
    sa.Column("change", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("actor_role", sa.String(20), nullable=False),
    sa.Column("changed_at", UtcDateTime, nullable=False),
)

# Who won a line and for how much, as its anchor recorded it (the line is then ``awarded``).
awards = sa.Table(
    "awards",
    metadata,
    sa.Column("demand_id", Id, sa.ForeignKey("demand_lines.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("supplier_name", sa.String(200), nullable=False),
    # Companies House, charity or society number: upper case, no spaces.
    sa.Column("supplier_registration_number", sa.String(20), nullable=True),
    # An incubated enterprise, when the anchor names it (the enterprises service's id).
    sa.Column("enterprise_id", Id, nullable=True),
    sa.Column("contract_value_pence", sa.BigInteger, nullable=False),
    sa.Column("awarded_on", sa.Date, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Column("recorded_by", sa.String(200), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("contract_value_pence >= 0", name="contract_value_not_negative"),
)

# The pipeline, kept incrementally: one row per fine cell and anchor, changed in the same
# transaction as the lines. ``lines``/``value``/``annualised`` are live; the ``released_``
# copies are what the latest snapshot published, refreshed by the snapshot job for the
# rows marked ``dirty``. Any view is a GROUP BY over these rows, never over the lines.
pipeline_cells = sa.Table(
    "pipeline_cells",
    metadata,
    sa.Column("cell_key", sa.String(160), primary_key=True),
    sa.Column("anchor_id", Id, nullable=False),
    sa.Column("aggregate_only", sa.Boolean, nullable=False),
    sa.Column("atom_key", sa.String(120), nullable=False),
    sa.Column("anchor_type", sa.String(40), nullable=False),
    sa.Column("cpv_division", sa.String(2), nullable=False),
    sa.Column("cpv_group", sa.String(3), nullable=False),
    sa.Column("tender_quarter", sa.String(12), nullable=False),
    sa.Column("start_quarter", sa.String(12), nullable=False),
    sa.Column("value_band", sa.String(12), nullable=False),
    sa.Column("suitable_for_vcse", sa.Boolean, nullable=False),
    sa.Column("suitable_for_sme", sa.Boolean, nullable=False),
    sa.Column("delivery_area", sa.String(12), nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("value_pence", sa.BigInteger, nullable=False),
    sa.Column("annualised_pence", sa.BigInteger, nullable=False),
    sa.Column("released_lines", sa.Integer, nullable=False, server_default="0"),
    sa.Column("released_value_pence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("released_annualised_pence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("dirty", sa.Boolean, nullable=False),
    sa.Column("changed_at", UtcDateTime, nullable=False),
)
sa.Index(
    "ix_pipeline_cells_dirty",
    pipeline_cells.c.changed_at,
    sqlite_where=sa.text("dirty IS 1"),
    postgresql_where=sa.text("dirty IS true"),
)
sa.Index("ix_pipeline_cells_anchor_id", pipeline_cells.c.anchor_id)

# The released figures rolled up to the dimensions most views ask for (no value band,
# suitability or delivery area): such a view reads these far fewer rows. Kept by the
# snapshot job from the changes it releases.
pipeline_rollup = sa.Table(
    "pipeline_rollup",
    metadata,
    sa.Column("anchor_id", Id, primary_key=True),
    sa.Column("aggregate_only", sa.Boolean, primary_key=True),
    sa.Column("anchor_type", sa.String(40), primary_key=True),
    sa.Column("cpv_group", sa.String(3), primary_key=True),
    sa.Column("tender_quarter", sa.String(12), primary_key=True),
    sa.Column("start_quarter", sa.String(12), primary_key=True),
    sa.Column("cpv_division", sa.String(2), nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("value_pence", sa.BigInteger, nullable=False),
    sa.Column("annualised_pence", sa.BigInteger, nullable=False),
    sa.Column("vcse_lines", sa.Integer, nullable=False),
    sa.Column("sme_lines", sa.Integer, nullable=False),
)

# The confidential part as released: per protection block (CPV division, tender quarter) and
# anchor, the aggregate-only figures of the block's latest released state. Views that hold
# whole blocks add these rows to the public ones; no other view reads them.
pipeline_confidential = sa.Table(
    "pipeline_confidential",
    metadata,
    sa.Column("cpv_division", sa.String(2), primary_key=True),
    sa.Column("tender_quarter", sa.String(12), primary_key=True),
    sa.Column("anchor_id", Id, primary_key=True),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("value_pence", sa.BigInteger, nullable=False),
    sa.Column("annualised_pence", sa.BigInteger, nullable=False),
    sa.Column("vcse_lines", sa.Integer, nullable=False),
    sa.Column("sme_lines", sa.Integer, nullable=False),
)

# Every state of a block ever published, per anchor (the change rule checks a new state
# against each of them); an empty state is one row with an empty anchor id.
pipeline_confidential_history = sa.Table(
    "pipeline_confidential_history",
    metadata,
    sa.Column("cpv_division", sa.String(2), primary_key=True),
    sa.Column("tender_quarter", sa.String(12), primary_key=True),
    sa.Column("release", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("anchor_id", sa.String(36), primary_key=True),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("value_pence", sa.BigInteger, nullable=False),
    sa.Column("annualised_pence", sa.BigInteger, nullable=False),
)

# Rows the release job could not process (skipped, so the others are released).
pipeline_release_failures = sa.Table(
    "pipeline_release_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("cell_key", sa.String(160), nullable=True),
    sa.Column("block", sa.String(20), nullable=True),
    sa.Column("error", sa.Text, nullable=False),
)

pipeline_snapshots = sa.Table(
    "pipeline_snapshots",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("id", Id, nullable=False, unique=True),
    sa.Column("generated_at", UtcDateTime, nullable=False),
    sa.Column("lines_count", sa.Integer, nullable=True),
    sa.Column("totals", Json, nullable=False),
    sa.Column("rules", Json, nullable=False),
    sa.Column("blocks", sa.Integer, nullable=False),
    # When the confidential part was last released (it moves on a cadence, not per change).
    sa.Column("confidential_at", UtcDateTime, nullable=True),
    # The totals' raw figures (lines, value, annualised, anchors, VCSE lines, SME lines), which the
    # next release moves by its changes, and whether this release moved the confidential part.
    sa.Column("raw_totals", Json, nullable=True),
    sa.Column("confidential_moved", sa.Boolean, nullable=False, server_default=sa.false()),
)

# What each release changed in the public rollup (per rollup key, for the last releases only):
# a view cached for an earlier snapshot is moved by these instead of computed again.
pipeline_changes = sa.Table(
    "pipeline_changes",
    metadata,
    sa.Column("id", BigIntegerKey, primary_key=True, autoincrement=True),
    sa.Column("version", sa.Integer, nullable=False, index=True),
    sa.Column("anchor_id", Id, nullable=False),
    sa.Column("anchor_type", sa.String(40), nullable=False),
    sa.Column("cpv_group", sa.String(3), nullable=False),
    sa.Column("cpv_division", sa.String(2), nullable=False),
    sa.Column("tender_quarter", sa.String(12), nullable=False),
    sa.Column("start_quarter", sa.String(12), nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("value_pence", sa.BigInteger, nullable=False),
    sa.Column("annualised_pence", sa.BigInteger, nullable=False),
    sa.Column("vcse_lines", sa.Integer, nullable=False),
    sa.Column("sme_lines", sa.Integer, nullable=False),
)

# Read model of the enterprises service, for matching (state-carrying events, by version).
match_enterprises = sa.Table(
    "match_enterprises",
    metadata,
    sa.Column("enterprise_id", Id, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("legal_form", sa.String(60), nullable=True),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("cohort_id", Id, nullable=True),
    sa.Column("postcode", sa.String(10), nullable=True),
    sa.Column("cpv_codes", Json, nullable=False),
    sa.Column("max_contract_value_pence", sa.BigInteger, nullable=True),
    sa.Column("employees", sa.Integer, nullable=True),
    sa.Column("turnover_pence", sa.BigInteger, nullable=True),
    sa.Column("vcse", sa.Boolean, nullable=False),
    sa.Column("size_class", sa.String(10), nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_match_enterprises_stage", "stage"),
)

match_readiness = sa.Table(
    "match_readiness",
    metadata,
    sa.Column("enterprise_id", Id, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("ready", sa.Boolean, nullable=False),
    sa.Column("missing", Json, nullable=False),
    sa.Column("verified", Json, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# Read model of the enterprises service's milestone catalogue: the codes a line may require.
milestone_catalogue = sa.Table(
    "milestone_catalogue",
    metadata,
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("category", sa.String(20), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)
