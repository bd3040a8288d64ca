"""Milestone definitions can be changed by staff: a version (ETag) and who changed it last.

Revision ID: ent0005
Revises: ent0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "ent0005"
down_revision: str | None = "ent0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("milestone_definitions") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("updated_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("updated_by", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("milestone_definitions") as batch:
        batch.drop_column("updated_by")
        batch.drop_column("updated_at")
        batch.drop_column("version")
