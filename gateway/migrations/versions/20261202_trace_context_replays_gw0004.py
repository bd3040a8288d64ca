"""Observability: the trace context of an outbox row and of a webhook event, a dead letter's
replay time.

Revision ID: gw0004
Revises: gw0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.migrations import add_kit_columns, drop_kit_columns

revision: str = "gw0004"
down_revision: str | None = "gw0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = {"outbox": ["trace_context"], "dead_letters": ["replayed_at"]}


def upgrade() -> None:
    add_kit_columns(COLUMNS)
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(sa.Column("trace_context", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("trace_context")
    drop_kit_columns(COLUMNS)
