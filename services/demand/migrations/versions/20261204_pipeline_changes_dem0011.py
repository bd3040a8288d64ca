"""What each release changed in the public rollup, so that a view cached for an earlier snapshot
is patched rather than computed again; a snapshot keeps its totals' raw figures and whether its
release moved the confidential part.

Revision ID: dem0011
Revises: dem0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "dem0011"
down_revision: str | None = "dem0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pipeline_changes",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("anchor_id", sa.String(36), nullable=False),
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
    op.create_index("ix_pipeline_changes_version", "pipeline_changes", ["version"])
    with op.batch_alter_table("pipeline_snapshots") as batch:
        batch.add_column(
            sa.Column("raw_totals", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True)
        )
        batch.add_column(
            sa.Column("confidential_moved", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("pipeline_snapshots") as batch:
        batch.drop_column("confidential_moved")
        batch.drop_column("raw_totals")
    op.drop_index("ix_pipeline_changes_version", "pipeline_changes")
    op.drop_table("pipeline_changes")
