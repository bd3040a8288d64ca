"""The pipeline rollup (released figures without value band, suitability, delivery area) and the
block spans on its dimensions, filled from what the latest snapshot released.

Revision ID: dem0004
Revises: dem0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "dem0004"
down_revision: str | None = "dem0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "anchor_type, cpv_group, tender_quarter, start_quarter, cpv_division"


def upgrade() -> None:
    op.create_table(
        "pipeline_rollup",
        sa.Column("anchor_id", sa.String(36), nullable=False),
        sa.Column("aggregate_only", sa.Boolean, nullable=False),
        sa.Column("anchor_type", sa.String(40), nullable=False),
        sa.Column("cpv_group", sa.String(3), nullable=False),
        sa.Column("tender_quarter", sa.String(12), nullable=False),
        sa.Column("start_quarter", sa.String(12), nullable=False),
        sa.Column("cpv_division", sa.String(2), nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("value_pence", sa.BigInteger, nullable=False),
        sa.Column("annualised_pence", sa.BigInteger, nullable=False),
        sa.Column("vcse_lines", sa.Integer, nullable=False),
        sa.Column("sme_lines", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint(
            "anchor_id",
            "aggregate_only",
            "anchor_type",
            "cpv_group",
            "tender_quarter",
            "start_quarter",
            name=op.f("pk_pipeline_rollup"),
        ),
    )
    op.create_table(
        "pipeline_block_spans",
        sa.Column("block_id", sa.Integer, nullable=False),
        sa.Column("anchor_type", sa.String(40), nullable=False),
        sa.Column("cpv_group", sa.String(3), nullable=False),
        sa.Column("tender_quarter", sa.String(12), nullable=False),
        sa.Column("start_quarter", sa.String(12), nullable=False),
        sa.Column("cpv_division", sa.String(2), nullable=False),
        sa.Column("publishable", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint(
            "block_id",
            "anchor_type",
            "cpv_group",
            "tender_quarter",
            "start_quarter",
            name=op.f("pk_pipeline_block_spans"),
        ),
    )
    op.execute(
        f"INSERT INTO pipeline_rollup (anchor_id, aggregate_only, {KEY}, lines, value_pence, "  # noqa: S608
        "annualised_pence, vcse_lines, sme_lines) "
        f"SELECT anchor_id, aggregate_only, {KEY}, sum(released_lines), sum(released_value_pence), "
        "sum(released_annualised_pence), "
        "sum(CASE WHEN suitable_for_vcse THEN released_lines ELSE 0 END), "
        "sum(CASE WHEN suitable_for_sme THEN released_lines ELSE 0 END) "
        f"FROM pipeline_cells WHERE released_lines > 0 GROUP BY anchor_id, aggregate_only, {KEY}"
    )
    op.execute(
        f"INSERT INTO pipeline_block_spans (block_id, publishable, {KEY}) "  # noqa: S608
        f"SELECT DISTINCT block_id, publishable, {KEY} FROM pipeline_blocks"
    )


def downgrade() -> None:
    op.drop_table("pipeline_block_spans")
    op.drop_table("pipeline_rollup")
