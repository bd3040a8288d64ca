"""Anchors, demand lines with their history and CPV codes, the pipeline cells, blocks and
snapshots, and the enterprise read model used for matching.

Revision ID: dem0002
Revises: dem0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db import UtcDateTime

revision: str = "dem0002"
down_revision: str | None = "dem0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _atom_columns() -> list[sa.Column]:
    return [
        sa.Column("anchor_type", sa.String(40), nullable=False),
        sa.Column("cpv_division", sa.String(2), nullable=False),
        sa.Column("cpv_group", sa.String(3), nullable=False),
        sa.Column("tender_quarter", sa.String(12), nullable=False),
        sa.Column("start_quarter", sa.String(12), nullable=False),
        sa.Column("value_band", sa.String(12), nullable=False),
        sa.Column("suitable_for_vcse", sa.Boolean, nullable=False),
        sa.Column("suitable_for_sme", sa.Boolean, nullable=False),
        sa.Column("delivery_area", sa.String(12), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "anchors",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("identifiers", _json(), nullable=False),
        sa.Column("annual_third_party_spend_pence", sa.BigInteger, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anchors")),
    )
    op.create_index("ix_anchors_name_id", "anchors", ["name", "id"])

    op.create_table(
        "demand_lines",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("anchor_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("external_ref", sa.String(100), nullable=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("cpv_codes", _json(), nullable=False),
        sa.Column("main_cpv", sa.String(8), nullable=False),
        sa.Column("estimated_value_pence", sa.BigInteger, nullable=False),
        sa.Column("min_value_pence", sa.BigInteger, nullable=True),
        sa.Column("max_value_pence", sa.BigInteger, nullable=True),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("procurement_method", sa.String(20), nullable=True),
        sa.Column("expected_tender_date", sa.Date, nullable=True),
        sa.Column("contract_start", sa.Date, nullable=True),
        sa.Column("duration_months", sa.Integer, nullable=True),
        sa.Column("lots", _json(), nullable=False),
        sa.Column("suitable_for_sme", sa.Boolean, nullable=False),
        sa.Column("suitable_for_vcse", sa.Boolean, nullable=False),
        sa.Column("reprocurement", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("status_reason", sa.String(500), nullable=True),
        sa.Column("visibility", sa.String(20), nullable=False),
        sa.Column("requirements", _json(), nullable=False),
        sa.Column("social_value_priorities", _json(), nullable=False),
        sa.Column("delivery_area", _json(), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["anchor_id"], ["anchors.id"], name=op.f("fk_demand_lines_anchor_id_anchors")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demand_lines")),
        sa.UniqueConstraint("anchor_id", "external_ref", name=op.f("uq_demand_lines_anchor_id_external_ref")),
    )
    op.create_index("ix_demand_lines_created_at_id", "demand_lines", ["created_at", "id"])
    op.create_index("ix_demand_lines_anchor_id_created_at", "demand_lines", ["anchor_id", "created_at"])
    op.create_index("ix_demand_lines_status_visibility", "demand_lines", ["status", "visibility"])
    op.create_index("ix_demand_lines_expected_tender_date", "demand_lines", ["expected_tender_date"])

    op.create_table(
        "demand_line_cpvs",
        sa.Column("line_id", sa.String(36), nullable=False),
        sa.Column("cpv_code", sa.String(8), nullable=False),
        sa.ForeignKeyConstraint(
            ["line_id"],
            ["demand_lines.id"],
            name=op.f("fk_demand_line_cpvs_line_id_demand_lines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("line_id", "cpv_code", name=op.f("pk_demand_line_cpvs")),
    )
    op.create_index("ix_demand_line_cpvs_cpv_code", "demand_line_cpvs", ["cpv_code"])

    op.create_table(
        "demand_line_versions",
        sa.Column("line_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("data", _json(), nullable=False),
        sa.Column("changed_fields", _json(), nullable=False),
        sa.Column("change", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("actor_role", sa.String(20), nullable=False),
        sa.Column("changed_at", UtcDateTime, nullable=False),
        sa.ForeignKeyConstraint(
            ["line_id"],
            ["demand_lines.id"],
            name=op.f("fk_demand_line_versions_line_id_demand_lines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("line_id", "version", name=op.f("pk_demand_line_versions")),
    )

    op.create_table(
        "pipeline_cells",
        sa.Column("cell_key", sa.String(160), nullable=False),
        sa.Column("anchor_id", sa.String(36), nullable=False),
        sa.Column("aggregate_only", sa.Boolean, nullable=False),
        sa.Column("atom_key", sa.String(120), nullable=False),
        *_atom_columns(),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("value_pence", sa.BigInteger, nullable=False),
        sa.Column("annualised_pence", sa.BigInteger, nullable=False),
        sa.Column("released_lines", sa.Integer, nullable=False, server_default="0"),
        sa.Column("released_value_pence", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("released_annualised_pence", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("dirty", sa.Boolean, nullable=False),
        sa.Column("changed_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("cell_key", name=op.f("pk_pipeline_cells")),
    )
    op.create_index(
        "ix_pipeline_cells_dirty",
        "pipeline_cells",
        ["changed_at"],
        sqlite_where=sa.text("dirty IS 1"),
        postgresql_where=sa.text("dirty IS true"),
    )
    op.create_index("ix_pipeline_cells_anchor_id", "pipeline_cells", ["anchor_id"])

    op.create_table(
        "pipeline_blocks",
        sa.Column("atom_key", sa.String(120), nullable=False),
        sa.Column("block_id", sa.Integer, nullable=False),
        sa.Column("publishable", sa.Boolean, nullable=False),
        *_atom_columns(),
        sa.PrimaryKeyConstraint("atom_key", name=op.f("pk_pipeline_blocks")),
    )

    op.create_table(
        "pipeline_snapshots",
        sa.Column("version", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("generated_at", UtcDateTime, nullable=False),
        sa.Column("lines_count", sa.Integer, nullable=True),
        sa.Column("totals", _json(), nullable=False),
        sa.Column("rules", _json(), nullable=False),
        sa.Column("blocks", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_pipeline_snapshots")),
        sa.UniqueConstraint("id", name=op.f("uq_pipeline_snapshots_id")),
    )

    op.create_table(
        "match_enterprises",
        sa.Column("enterprise_id", sa.String(36), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("legal_form", sa.String(60), nullable=True),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("cohort_id", sa.String(36), nullable=True),
        sa.Column("postcode", sa.String(10), nullable=True),
        sa.Column("cpv_codes", _json(), nullable=False),
        sa.Column("max_contract_value_pence", sa.BigInteger, nullable=True),
        sa.Column("employees", sa.Integer, nullable=True),
        sa.Column("turnover_pence", sa.BigInteger, nullable=True),
        sa.Column("vcse", sa.Boolean, nullable=False),
        sa.Column("size_class", sa.String(10), nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("enterprise_id", name=op.f("pk_match_enterprises")),
    )
    op.create_index("ix_match_enterprises_stage", "match_enterprises", ["stage"])

    op.create_table(
        "match_readiness",
        sa.Column("enterprise_id", sa.String(36), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("ready", sa.Boolean, nullable=False),
        sa.Column("missing", _json(), nullable=False),
        sa.Column("verified", _json(), nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("enterprise_id", name=op.f("pk_match_readiness")),
    )


def downgrade() -> None:
    for table in (
        "match_readiness",
        "match_enterprises",
        "pipeline_snapshots",
        "pipeline_blocks",
        "pipeline_cells",
        "demand_line_versions",
        "demand_line_cpvs",
        "demand_lines",
        "anchors",
    ):
        op.drop_table(table)
