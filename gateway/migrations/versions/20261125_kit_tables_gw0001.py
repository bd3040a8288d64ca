"""Kit tables: outbox, inbox, dead letters, idempotency keys.

Revision ID: gw0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from shared.migrations import create_kit_tables, drop_kit_tables

revision: str = "gw0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_kit_tables()


def downgrade() -> None:
    drop_kit_tables()
