"""Tables of the mentoring service (its own database)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from shared.db import UtcDateTime, new_metadata
from shared.migrations import include_kit_tables

metadata = new_metadata()
include_kit_tables(metadata)

mentors = sa.Table(
    "mentors",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("organisation", sa.String(200), nullable=True),
    sa.Column("anchor_id", sa.Uuid, nullable=True),
    sa.Column("bio", sa.Text, nullable=True),
    sa.Column("expertise", sa.JSON, nullable=False),  # tags; mentor_expertise indexes them
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("session_lengths", sa.JSON, nullable=False),  # minutes, ascending
    sa.Column("max_active_mentees", sa.Integer, nullable=True),
    sa.Column("max_sessions_per_week", sa.Integer, nullable=True),
    sa.Column("active", sa.Boolean, nullable=False),
    # Availability is stored as rules in the mentor's zone, never as expanded slots.
    sa.Column("weekly_windows", sa.JSON, nullable=False),  # [{"weekday", "start", "end"}]
    sa.Column("date_overrides", sa.JSON, nullable=False),  # [{"date", "windows": [...]}]
    sa.Column("buffer_before_minutes", sa.Integer, nullable=False),
    sa.Column("buffer_after_minutes", sa.Integer, nullable=False),
    sa.Column("minimum_notice_minutes", sa.Integer, nullable=False),
    sa.Column("cancellation_notice_minutes", sa.Integer, nullable=False),
    sa.Column("slot_interval_minutes", sa.Integer, nullable=False),
    sa.Column("booking_horizon_days", sa.Integer, nullable=False),
    sa.Column("max_sessions_per_day", sa.Integer, nullable=True),
    # sha256 of the secret calendar feed token; the token itself is shown once.
    sa.Column("calendar_token_hash", sa.String(64), nullable=True),
    sa.Column("calendar_token_rotated_at", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)
sa.Index("ix_mentors_created_at_id", mentors.c.created_at, mentors.c.id)

mentor_expertise = sa.Table(
    "mentor_expertise",
    metadata,
    sa.Column("mentor_id", sa.Uuid, sa.ForeignKey("mentors.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.String(64), primary_key=True),
)
sa.Index("ix_mentor_expertise_tag", mentor_expertise.c.tag, mentor_expertise.c.mentor_id)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("mentor_id", sa.Uuid, sa.ForeignKey("mentors.id"), nullable=False),
    sa.Column("enterprise_id", sa.Uuid, nullable=False),
    sa.Column("starts_at", UtcDateTime, nullable=False),
    sa.Column("ends_at", UtcDateTime, nullable=False),
    # The time taken from the mentor: the session plus its buffers.
    sa.Column("blocked_from", UtcDateTime, nullable=False),
    sa.Column("blocked_until", UtcDateTime, nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("duration_minutes", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(500), nullable=False),
    sa.Column("milestone_code", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    # Grows with every change; the iCalendar SEQUENCE and the ETag.
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
    sa.Column("closed_at", UtcDateTime, nullable=True),  # completed or no-show recorded
    # When the current start time was set (booked or rescheduled): no reminder falls before it.
    sa.Column("scheduled_at", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("ends_at > starts_at", name="ends_after_start"),
    sa.CheckConstraint("blocked_from <= starts_at AND blocked_until >= ends_at", name="blocked_covers"),
    sa.CheckConstraint(
        "status IN ('booked', 'cancelled', 'completed', 'no_show')",
        name="status_known",
    ),
)
# A session's occupied time (itself and its buffers) spans at most this: so the sessions whose
# occupied time meets a range all start within this much of it, and a query for them reads a
# range of the (mentor_id, starts_at) and (enterprise_id, starts_at) indexes rather than every
# session the mentor or enterprise ever had. The schemas allow at most 8 h + 8 h + 8 h.
MAX_BLOCKED_SPAN = timedelta(days=2)
for _dialect, _within in (
    ("sqlite", "julianday(blocked_until) - julianday(blocked_from) <= 2"),
    ("postgresql", "blocked_until - blocked_from <= interval '2 days'"),
):
    sessions.append_constraint(sa.CheckConstraint(_within, name="blocked_span").ddl_if(dialect=_dialect))
sa.Index("ix_sessions_mentor_id_starts_at", sessions.c.mentor_id, sessions.c.starts_at)
sa.Index("ix_sessions_enterprise_id_starts_at", sessions.c.enterprise_id, sessions.c.starts_at)
sa.Index("ix_sessions_starts_at_id", sessions.c.starts_at, sessions.c.id)

# No mentor and no enterprise is ever in two overlapping booked sessions (PostgreSQL;
# on SQLite the booking checks inside a transaction that holds the write lock).
# Created by the migration; declared here so the metadata tells the whole truth.
MENTOR_OVERLAP = "ex_sessions_mentor_overlap"
ENTERPRISE_OVERLAP = "ex_sessions_enterprise_overlap"
for _name, _party, _low, _high in (
    (MENTOR_OVERLAP, sessions.c.mentor_id, sessions.c.blocked_from, sessions.c.blocked_until),
    (ENTERPRISE_OVERLAP, sessions.c.enterprise_id, sessions.c.starts_at, sessions.c.ends_at),
):
    sessions.append_constraint(
        postgresql.ExcludeConstraint(
            (_party, "="),
            (sa.func.tstzrange(_low, _high, sa.literal_column("'[)'")), "&&"),
            name=_name,
            using="gist",
            where=sessions.c.status == sa.literal_column("'booked'"),
        ).ddl_if(dialect="postgresql")
    )

# The reminders already handled: one row per session, offset and start time, written in the
# transaction that publishes (or skips) the reminder. Its key makes a reminder happen once,
# whichever replica gets there first; a rescheduled session has a new start, so new reminders.
session_reminders = sa.Table(
    "session_reminders",
    metadata,
    sa.Column("session_id", sa.Uuid, sa.ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("offset_minutes", sa.Integer, primary_key=True),
    sa.Column("starts_at", UtcDateTime, primary_key=True),
    sa.Column("handled_at", UtcDateTime, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # published | skipped
)

# The enterprises as the enterprises service announces them (a read model for
# recommendations); each half keeps the version of the last event applied.
enterprises = sa.Table(
    "enterprises",
    metadata,
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
