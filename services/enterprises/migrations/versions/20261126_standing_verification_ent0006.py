"""Standing verification: what was verified stays in force while an early renewal awaits review.

Nullable columns (and a flag defaulting to false): existing milestones have no renewal pending,
so there is nothing to backfill.

Revision ID: ent0006
Revises: ent0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db import UtcDateTime

revision: str = "ent0006"
down_revision: str | None = "ent0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

COLUMNS = (
    ("evidence", Json),
    ("value_pence", sa.BigInteger()),
    ("expires_at", UtcDateTime()),
    ("submitted_at", UtcDateTime()),
    ("submitted_by_role", sa.String(20)),
    ("submitted_by_actor", sa.String(200)),
    ("submitted_by_subject", sa.String(64)),
    ("verified_at", UtcDateTime()),
    ("verified_by_role", sa.String(20)),
    ("verified_by_actor", sa.String(200)),
    ("verified_by_subject", sa.String(64)),
)


def upgrade() -> None:
    with op.batch_alter_table("enterprise_milestones") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(f"standing_{name}", type_, nullable=True))
        batch.add_column(
            sa.Column("standing_expiry_warned", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_index(
        "ix_enterprise_milestones_standing_expiry",
        "enterprise_milestones",
        ["standing_expires_at"],
        sqlite_where=sa.text("standing_verified_at IS NOT NULL"),
        postgresql_where=sa.text("standing_verified_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_enterprise_milestones_standing_expiry", table_name="enterprise_milestones")
    with op.batch_alter_table("enterprise_milestones") as batch:
        batch.drop_column("standing_expiry_warned")
        for name, _ in reversed(COLUMNS):
            batch.drop_column(f"standing_{name}")
