"""Bids of enterprises on public demand lines, their history, and the awards of those lines.

``bids`` and ``bid_history`` are new. ``demand_lines`` (the copy of public lines) gains the line
fields the impact report reads and the award of ``demand.item.awarded.v1``: all nullable, filled
in by the next event of each line, so there is nothing to backfill.

Revision ID: ent0009
Revises: ent0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db import BigIntegerKey, UtcDateTime

revision: str = "ent0009"
down_revision: str | None = "ent0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

LINE_COLUMNS = (
    ("anchor_id", sa.Uuid()),
    ("estimated_value_pence", sa.BigInteger()),
    ("cpv_codes", Json),
    ("delivery_area", sa.String(200)),
    ("first_published_at", UtcDateTime()),
    ("awarded_enterprise_id", sa.Uuid()),
    ("awarded_registration_number", sa.String(20)),
    ("awarded_supplier_name", sa.String(200)),
    ("awarded_value_pence", sa.BigInteger()),
    ("awarded_on", sa.Date()),
    ("award_version", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("demand_lines") as batch:
        for name, type_ in LINE_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    op.create_index("ix_demand_lines_anchor_id", "demand_lines", ["anchor_id"])

    op.create_table(
        "bids",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("enterprise_id", sa.Uuid(), nullable=False),
        sa.Column("demand_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("partners", Json, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("contract_value_pence", sa.BigInteger(), nullable=True),
        sa.Column("submitted_at", UtcDateTime(), nullable=True),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("award_check", sa.String(20), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint("contract_value_pence >= 0", name=op.f("ck_bids_contract_value_not_negative")),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprises.id"],
            name=op.f("fk_bids_enterprise_id_enterprises"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bids")),
        sa.UniqueConstraint("enterprise_id", "demand_id", name=op.f("uq_bids_enterprise_id_demand_id")),
    )
    op.create_index("ix_bids_created_at_id", "bids", ["created_at", "id"])
    op.create_index("ix_bids_enterprise_id_created_at_id", "bids", ["enterprise_id", "created_at", "id"])
    op.create_index("ix_bids_demand_id_created_at_id", "bids", ["demand_id", "created_at", "id"])

    op.create_table(
        "bid_history",
        sa.Column("id", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("bid_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("partners", Json, nullable=False),
        sa.Column("contract_value_pence", sa.BigInteger(), nullable=True),
        sa.Column("award_check", sa.String(20), nullable=True),
        sa.Column("actor_role", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("actor_subject", sa.String(64), nullable=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bid_id"], ["bids.id"], name=op.f("fk_bid_history_bid_id_bids"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bid_history")),
    )
    op.create_index("ix_bid_history_bid_id_id", "bid_history", ["bid_id", "id"])


def downgrade() -> None:
    op.drop_table("bid_history")
    op.drop_table("bids")
    op.drop_index("ix_demand_lines_anchor_id", table_name="demand_lines")
    with op.batch_alter_table("demand_lines") as batch:
        for name, _ in reversed(LINE_COLUMNS):
            batch.drop_column(name)
