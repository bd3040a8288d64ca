"""Stale lines: when a draft or planned line's expected tender date passed without an update, the
stale-lines job marks it (``stale_since``) and, by default, takes it out of the pipeline and
matching (``stale_left_pipeline``); an update giving it a date again clears both.

Revision ID: dem0009
Revises: dem0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "dem0009"
down_revision: str | None = "dem0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it): a batch copy of the table would drop the old one, and
    # with foreign keys on that cascades into the history rows.
    op.add_column("demand_lines", sa.Column("stale_since", UtcDateTime(), nullable=True))
    op.add_column(
        "demand_lines",
        sa.Column("stale_left_pipeline", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("demand_lines", "stale_left_pipeline")
    op.drop_column("demand_lines", "stale_since")
