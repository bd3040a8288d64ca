"""Listing indexes: each common filter walks its own index in page order (created_at, id).

Revision ID: ent0004
Revises: ent0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ent0004"
down_revision: str | None = "ent0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILTERS = ("stage", "cohort_id", "legal_form")


def upgrade() -> None:
    for column in FILTERS:
        op.drop_index(f"ix_enterprises_{column}", table_name="enterprises")
        op.create_index(f"ix_enterprises_{column}_created_at_id", "enterprises", [column, "created_at", "id"])


def downgrade() -> None:
    for column in FILTERS:
        op.drop_index(f"ix_enterprises_{column}_created_at_id", table_name="enterprises")
        op.create_index(f"ix_enterprises_{column}", "enterprises", [column])
