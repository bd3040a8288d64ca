"""The copy of completed mentoring sessions, for the impact report's mentoring hours.

Sessions completed before this revision are not copied (their events were consumed already), so
the report's mentoring hours start from here.

Revision ID: ent0010
Revises: ent0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db import UtcDateTime

revision: str = "ent0010"
down_revision: str | None = "ent0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mentoring_sessions",
        sa.Column("session_id", sa.Uuid, primary_key=True),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("enterprise_id", sa.Uuid, nullable=False),
        sa.Column("mentor_id", sa.Uuid, nullable=False),
        sa.Column("starts_at", UtcDateTime, nullable=False),
        sa.Column("ends_at", UtcDateTime, nullable=False),
        sa.Column("completed_at", UtcDateTime, nullable=False),
        sa.Column("milestone_code", sa.String(64), nullable=True),
        sa.Column(
            "signed_off_milestones", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
    )
    op.create_index("ix_mentoring_sessions_enterprise_id", "mentoring_sessions", ["enterprise_id"])


def downgrade() -> None:
    op.drop_table("mentoring_sessions")
