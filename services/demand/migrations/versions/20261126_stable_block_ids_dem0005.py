"""Block ids become stable 63-bit keys (BIGINT), so a release rewrites only the blocks that changed.

Revision ID: dem0005
Revises: dem0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "dem0005"
down_revision: str | None = "dem0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # an INTEGER column holds 64 bits already
    for table in ("pipeline_blocks", "pipeline_block_spans"):
        op.alter_column(
            table, "block_id", type_=sa.BigInteger, existing_type=sa.Integer, existing_nullable=False
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    # Old integer ids cannot hold the new keys: the next release rebuilds the blocks.
    op.execute("DELETE FROM pipeline_block_spans")
    op.execute("DELETE FROM pipeline_blocks")
    for table in ("pipeline_blocks", "pipeline_block_spans"):
        op.alter_column(
            table, "block_id", type_=sa.Integer, existing_type=sa.BigInteger, existing_nullable=False
        )
