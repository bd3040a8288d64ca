"""Kit columns for observability: the outbox row's trace context, a dead letter's replay time.

Revision ID: men0005
Revises: men0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from shared.migrations import add_kit_columns, drop_kit_columns

revision: str = "men0005"
down_revision: str | None = "men0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = {"outbox": ["trace_context"], "dead_letters": ["replayed_at"]}


def upgrade() -> None:
    add_kit_columns(COLUMNS)


def downgrade() -> None:
    drop_kit_columns(COLUMNS)
