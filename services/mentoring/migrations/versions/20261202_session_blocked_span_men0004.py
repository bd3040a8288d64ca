"""A session's occupied time spans at most two days (``ck_sessions_blocked_span``).

The schemas never allowed more (a session of at most 8 hours, buffers of at most 8 hours
each); the constraint makes it a fact the queries can lean on: the sessions whose occupied
time meets a range all start within two days of it, so the booking and slot queries read a
range of the ``(mentor_id, starts_at)`` index instead of a mentor's whole history.

Revision ID: men0004
Revises: men0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "men0004"
down_revision: str | None = "men0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITHIN = {
    "sqlite": "julianday(blocked_until) - julianday(blocked_from) <= 2",
    "postgresql": "blocked_until - blocked_from <= interval '2 days'",
}


def upgrade() -> None:
    within = WITHIN[op.get_bind().dialect.name]
    with op.batch_alter_table("sessions") as batch:  # SQLite: the table is rebuilt
        batch.create_check_constraint("blocked_span", within)


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("blocked_span", type_="check")  # (named by the convention)
