"""The demand service's copy of the milestone catalogue (the enterprises service owns it), fed by
``enterprises.milestone_definition.published.v1``: the codes a line's requirements may name.

Revision ID: dem0008
Revises: dem0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "dem0008"
down_revision: str | None = "dem0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "milestone_catalogue",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_milestone_catalogue")),
    )


def downgrade() -> None:
    op.drop_table("milestone_catalogue")
