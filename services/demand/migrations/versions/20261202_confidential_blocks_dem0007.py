"""The confidential part is released per fixed block (CPV division, tender quarter) under the
change rule: the released per-anchor state of each block, every state ever published, and the
rows the release job skipped. The re-formed protection blocks and their spans go; the rollup
keeps public figures only; every aggregate-only cell waits for the next confidential release.

Revision ID: dem0007
Revises: dem0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "dem0007"
down_revision: str | None = "dem0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ATOM = (
    ("anchor_type", 40),
    ("cpv_division", 2),
    ("cpv_group", 3),
    ("tender_quarter", 12),
    ("start_quarter", 12),
    ("value_band", 12),
)


def upgrade() -> None:
    op.create_table(
        "pipeline_confidential",
        sa.Column("cpv_division", sa.String(2), nullable=False),
        sa.Column("tender_quarter", sa.String(12), nullable=False),
        sa.Column("anchor_id", sa.String(36), nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("value_pence", sa.BigInteger, nullable=False),
        sa.Column("annualised_pence", sa.BigInteger, nullable=False),
        sa.Column("vcse_lines", sa.Integer, nullable=False),
        sa.Column("sme_lines", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint(
            "cpv_division", "tender_quarter", "anchor_id", name=op.f("pk_pipeline_confidential")
        ),
    )
    op.create_table(
        "pipeline_confidential_history",
        sa.Column("cpv_division", sa.String(2), nullable=False),
        sa.Column("tender_quarter", sa.String(12), nullable=False),
        sa.Column("release", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("anchor_id", sa.String(36), nullable=False),
        sa.Column("lines", sa.Integer, nullable=False),
        sa.Column("value_pence", sa.BigInteger, nullable=False),
        sa.Column("annualised_pence", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "cpv_division",
            "tender_quarter",
            "release",
            "anchor_id",
            name=op.f("pk_pipeline_confidential_history"),
        ),
    )
    op.create_table(
        "pipeline_release_failures",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("cell_key", sa.String(160), nullable=True),
        sa.Column("block", sa.String(20), nullable=True),
        sa.Column("error", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_release_failures")),
    )
    with op.batch_alter_table("pipeline_snapshots") as batch:
        batch.add_column(sa.Column("confidential_at", UtcDateTime, nullable=True))
    op.drop_table("pipeline_block_spans")
    op.drop_table("pipeline_blocks")
    op.execute("DELETE FROM pipeline_rollup WHERE aggregate_only")
    op.execute("UPDATE pipeline_cells SET dirty = true WHERE aggregate_only")


def downgrade() -> None:
    # The old job re-forms its blocks at its next release: they are created empty.
    op.create_table(
        "pipeline_blocks",
        sa.Column("atom_key", sa.String(120), nullable=False),
        sa.Column("block_id", sa.BigInteger, nullable=False),
        sa.Column("publishable", sa.Boolean, nullable=False),
        *(sa.Column(name, sa.String(size), nullable=False) for name, size in ATOM),
        sa.Column("suitable_for_vcse", sa.Boolean, nullable=False),
        sa.Column("suitable_for_sme", sa.Boolean, nullable=False),
        sa.Column("delivery_area", sa.String(12), nullable=False),
        sa.PrimaryKeyConstraint("atom_key", name=op.f("pk_pipeline_blocks")),
    )
    op.create_table(
        "pipeline_block_spans",
        sa.Column("block_id", sa.BigInteger, nullable=False),
        *(sa.Column(name, sa.String(size), nullable=False) for name, size in ATOM[:5]),
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
        "UPDATE pipeline_cells SET dirty = true, released_lines = 0, released_value_pence = 0, "
        "released_annualised_pence = 0 WHERE aggregate_only"
    )
    with op.batch_alter_table("pipeline_snapshots") as batch:
        batch.drop_column("confidential_at")
    op.drop_table("pipeline_release_failures")
    op.drop_table("pipeline_confidential_history")
    op.drop_table("pipeline_confidential")
