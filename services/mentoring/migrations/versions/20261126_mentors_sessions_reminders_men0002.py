"""Mentors, availability rules, sessions (never overlapping), reminders, enterprise read model.

Revision ID: men0002
Revises: men0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db import UtcDateTime

revision: str = "men0002"
down_revision: str | None = "men0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "mentors",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("organisation", sa.String(200), nullable=True),
        sa.Column("anchor_id", sa.Uuid, nullable=True),
        sa.Column("bio", sa.Text, nullable=True),
        sa.Column("expertise", sa.JSON, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("session_lengths", sa.JSON, nullable=False),
        sa.Column("max_active_mentees", sa.Integer, nullable=True),
        sa.Column("max_sessions_per_week", sa.Integer, nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("weekly_windows", sa.JSON, nullable=False),
        sa.Column("date_overrides", sa.JSON, nullable=False),
        sa.Column("buffer_before_minutes", sa.Integer, nullable=False),
        sa.Column("buffer_after_minutes", sa.Integer, nullable=False),
        sa.Column("minimum_notice_minutes", sa.Integer, nullable=False),
        sa.Column("cancellation_notice_minutes", sa.Integer, nullable=False),
        sa.Column("slot_interval_minutes", sa.Integer, nullable=False),
        sa.Column("booking_horizon_days", sa.Integer, nullable=False),
        sa.Column("max_sessions_per_day", sa.Integer, nullable=True),
        sa.Column("calendar_token_hash", sa.String(64), nullable=True),
        sa.Column("calendar_token_rotated_at", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_mentors_created_at_id", "mentors", ["created_at", "id"])

    op.create_table(
        "mentor_expertise",
        sa.Column("mentor_id", sa.Uuid, sa.ForeignKey("mentors.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    op.create_index("ix_mentor_expertise_tag", "mentor_expertise", ["tag", "mentor_id"])

    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("mentor_id", sa.Uuid, sa.ForeignKey("mentors.id"), nullable=False),
        sa.Column("enterprise_id", sa.Uuid, nullable=False),
        sa.Column("starts_at", UtcDateTime, nullable=False),
        sa.Column("ends_at", UtcDateTime, nullable=False),
        sa.Column("blocked_from", UtcDateTime, nullable=False),
        sa.Column("blocked_until", UtcDateTime, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("duration_minutes", sa.Integer, nullable=False),
        sa.Column("topic", sa.String(500), nullable=False),
        sa.Column("milestone_code", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("booked_by_role", sa.String(16), nullable=False),
        sa.Column("booked_by", sa.String(200), nullable=False),
        sa.Column("cancel_reason", sa.Text, nullable=True),
        sa.Column("cancelled_by_role", sa.String(16), nullable=True),
        sa.Column("cancelled_at", UtcDateTime, nullable=True),
        sa.Column("reschedule_reason", sa.Text, nullable=True),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Column("notes", sa.Text, nullable=True),
        sa.Column("action_items", sa.JSON, nullable=True),
        sa.Column("signed_off_milestones", sa.JSON, nullable=True),
        sa.Column("absent_party", sa.String(16), nullable=True),
        sa.Column("closed_at", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        sa.CheckConstraint("blocked_from <= starts_at AND blocked_until >= ends_at", name="blocked_covers"),
        sa.CheckConstraint("status IN ('booked', 'cancelled', 'completed', 'no_show')", name="status_known"),
    )
    op.create_index("ix_sessions_mentor_id_starts_at", "sessions", ["mentor_id", "starts_at"])
    op.create_index("ix_sessions_enterprise_id_starts_at", "sessions", ["enterprise_id", "starts_at"])
    op.create_index("ix_sessions_starts_at_id", "sessions", ["starts_at", "id"])
    if postgres:
        # The guarantee against double booking, whatever the concurrency: a mentor's booked
        # sessions (buffers included) and an enterprise's booked sessions never overlap.
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE sessions ADD CONSTRAINT ex_sessions_mentor_overlap EXCLUDE USING gist "
            "(mentor_id WITH =, tstzrange(blocked_from, blocked_until, '[)') WITH &&) "
            "WHERE (status = 'booked')"
        )
        op.execute(
            "ALTER TABLE sessions ADD CONSTRAINT ex_sessions_enterprise_overlap EXCLUDE USING gist "
            "(enterprise_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) "
            "WHERE (status = 'booked')"
        )

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

    op.create_table(
        "enterprises",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.String(300), nullable=True),
        sa.Column("stage", sa.String(32), nullable=True),
        sa.Column("profile_version", sa.Integer, nullable=False),
        sa.Column("open_milestones", sa.JSON, nullable=False),
        sa.Column("ready", sa.Boolean, nullable=True),
        sa.Column("readiness_score", sa.Float, nullable=True),
        sa.Column("readiness_version", sa.Integer, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("enterprises")
    op.drop_index("ix_session_reminders_due", table_name="session_reminders")
    op.drop_table("session_reminders")
    op.drop_table("sessions")
    op.drop_table("mentor_expertise")
    op.drop_table("mentors")
