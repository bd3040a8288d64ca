"""Reminders as a ledger of what was handled, derived from the sessions and the configured offsets.

The first design wrote a row per future reminder at booking time; now a booking writes
nothing for its reminders (the job derives them from ``sessions.scheduled_at`` and the
offsets in force) and ``session_reminders`` records each reminder once it is handled.

Revision ID: men0003
Revises: men0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "men0003"
down_revision: str | None = "men0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Reminder rows held only schedules, which are now derived: nothing is lost.
    op.drop_index("ix_session_reminders_due", table_name="session_reminders")
    op.drop_table("session_reminders")
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("scheduled_at", UtcDateTime, nullable=True))
    op.execute("UPDATE sessions SET scheduled_at = updated_at")
    with op.batch_alter_table("sessions") as batch:
        batch.alter_column("scheduled_at", existing_type=UtcDateTime, nullable=False)
    op.create_table(
        "session_reminders",
        sa.Column("session_id", sa.Uuid, sa.ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("offset_minutes", sa.Integer, primary_key=True),
        sa.Column("starts_at", UtcDateTime, primary_key=True),
        sa.Column("handled_at", UtcDateTime, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("session_reminders")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("scheduled_at")
    op.create_table(
        "session_reminders",
        sa.Column("session_id", sa.Uuid, sa.ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("offset_minutes", sa.Integer, primary_key=True),
        sa.Column("due_at", UtcDateTime, nullable=False),
        sa.Column("sent_at", UtcDateTime, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
    )
    op.create_index(
        "ix_session_reminders_due",
        "session_reminders",
        ["due_at"],
        sqlite_where=sa.text("sent_at IS NULL"),
        postgresql_where=sa.text("sent_at IS NULL"),
    )
