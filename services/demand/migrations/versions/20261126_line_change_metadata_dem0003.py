"""Who made a line's current version lives on the line; demand_line_versions keeps the previous ones.

Revision ID: dem0003
Revises: dem0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "dem0003"
down_revision: str | None = "dem0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VERSION_OF_LINE = (
    "FROM demand_line_versions v WHERE v.line_id = demand_lines.id AND v.version = demand_lines.version"
)


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    # Plain ADD COLUMN (SQLite has it): a batch copy of the table would drop the old one, and
    # with foreign keys on that cascades into the history rows.
    op.add_column(
        "demand_lines", sa.Column("change", sa.String(20), nullable=False, server_default="created")
    )
    op.add_column("demand_lines", sa.Column("changed_by", sa.String(200), nullable=False, server_default=""))
    op.add_column(
        "demand_lines", sa.Column("changed_by_role", sa.String(20), nullable=False, server_default="staff")
    )
    op.add_column(
        "demand_lines", sa.Column("changed_fields", json, nullable=False, server_default=sa.text("'[]'"))
    )
    # The current version moves from the history table onto the line.
    for column, source in (
        ("change", "v.change"),
        ("changed_by", "v.actor"),
        ("changed_by_role", "v.actor_role"),
        ("changed_fields", "v.changed_fields"),
    ):
        op.execute(
            f"UPDATE demand_lines SET {column} = (SELECT {source} {VERSION_OF_LINE}) "  # noqa: S608
            f"WHERE EXISTS (SELECT 1 {VERSION_OF_LINE})"
        )
    op.execute(
        "DELETE FROM demand_line_versions WHERE EXISTS (SELECT 1 FROM demand_lines l "
        "WHERE l.id = demand_line_versions.line_id AND l.version = demand_line_versions.version)"
    )


def downgrade() -> None:
    # The current versions are not copied back into the history: the line itself holds them.
    for column in ("changed_fields", "changed_by_role", "changed_by", "change"):
        op.drop_column("demand_lines", column)
