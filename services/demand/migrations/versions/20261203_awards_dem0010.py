"""Awards: who won a demand line and for how much (supplier, registration number, an incubated
enterprise when the anchor names it, contract value, award date), one per line.

Revision ID: dem0010
Revises: dem0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "dem0010"
down_revision: str | None = "dem0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "awards",
        sa.Column("demand_id", sa.String(36), nullable=False),
        sa.Column("supplier_name", sa.String(200), nullable=False),
        sa.Column("supplier_registration_number", sa.String(20), nullable=True),
        sa.Column("enterprise_id", sa.String(36), nullable=True),
        sa.Column("contract_value_pence", sa.BigInteger, nullable=False),
        sa.Column("awarded_on", sa.Date, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("contract_value_pence >= 0", name=op.f("ck_awards_contract_value_not_negative")),
        sa.ForeignKeyConstraint(
            ["demand_id"],
            ["demand_lines.id"],
            name=op.f("fk_awards_demand_id_demand_lines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("demand_id", name=op.f("pk_awards")),
    )


def downgrade() -> None:
    op.drop_table("awards")
