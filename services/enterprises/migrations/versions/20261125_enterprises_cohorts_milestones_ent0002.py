"""Enterprises, cohorts, milestone definitions and enterprise milestones, history, demand read model.

Revision ID: ent0002
Revises: ent0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db import BigIntegerKey, UtcDateTime

revision: str = "ent0002"
down_revision: str | None = "ent0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cohorts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("programme", sa.String(200), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("end_date >= start_date", name=op.f("ck_cohorts_ends_after_start")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cohorts")),
        sa.UniqueConstraint("name", name=op.f("uq_cohorts_name")),
    )
    op.create_index("ix_cohorts_created_at_id", "cohorts", ["created_at", "id"])

    op.create_table(
        "demand_lines",
        sa.Column("demand_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("title", sa.String(500), nullable=True),
        sa.Column("requirements", Json, nullable=False),
        sa.Column("withdrawn", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("demand_id", name=op.f("pk_demand_lines")),
    )

    op.create_table(
        "milestone_definitions",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("applies_when", Json, nullable=False),
        sa.Column("threshold_pence", sa.BigInteger(), nullable=True),
        sa.Column("validity_days", sa.Integer(), nullable=True),
        sa.Column("core", sa.Boolean(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_milestone_definitions")),
    )

    op.create_table(
        "enterprises",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("legal_form", sa.String(40), nullable=False),
        sa.Column("registration_number", sa.String(20), nullable=True),
        sa.Column("postcode", sa.String(8), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("cohort_id", sa.Uuid(), nullable=True),
        sa.Column("cpv_codes", Json, nullable=False),
        sa.Column("max_contract_value_pence", sa.BigInteger(), nullable=True),
        sa.Column("employees", sa.Integer(), nullable=True),
        sa.Column("turnover_pence", sa.BigInteger(), nullable=True),
        sa.Column("vcse", sa.Boolean(), nullable=False),
        sa.Column("handles_personal_data", sa.Boolean(), nullable=False),
        sa.Column("works_with_public", sa.Boolean(), nullable=False),
        sa.Column("works_with_vulnerable_people", sa.Boolean(), nullable=False),
        sa.Column("provides_professional_advice", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("website", sa.String(300), nullable=True),
        sa.Column("size_class", sa.String(10), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("readiness_version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("readiness_digest", sa.String(64), nullable=True),
        sa.Column("readiness_score", sa.Float(), nullable=True),
        sa.Column("readiness_ready", sa.Boolean(), nullable=True),
        sa.Column("readiness_stale", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.CheckConstraint("employees >= 0", name=op.f("ck_enterprises_employees_not_negative")),
        sa.CheckConstraint(
            "max_contract_value_pence >= 0", name=op.f("ck_enterprises_capacity_not_negative")
        ),
        sa.CheckConstraint("turnover_pence >= 0", name=op.f("ck_enterprises_turnover_not_negative")),
        sa.ForeignKeyConstraint(["cohort_id"], ["cohorts.id"], name=op.f("fk_enterprises_cohort_id_cohorts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enterprises")),
    )
    op.create_index("ix_enterprises_cohort_id", "enterprises", ["cohort_id"])
    op.create_index("ix_enterprises_created_at_id", "enterprises", ["created_at", "id"])
    op.create_index("ix_enterprises_legal_form", "enterprises", ["legal_form"])
    op.create_index("ix_enterprises_stage", "enterprises", ["stage"])
    op.create_index(
        "ix_enterprises_readiness_stale",
        "enterprises",
        ["id"],
        sqlite_where=sa.text("readiness_stale"),
        postgresql_where=sa.text("readiness_stale"),
    )
    op.create_index(
        "uq_enterprises_registration_number",
        "enterprises",
        ["registration_number"],
        unique=True,
        sqlite_where=sa.text("registration_number IS NOT NULL"),
        postgresql_where=sa.text("registration_number IS NOT NULL"),
    )

    op.create_table(
        "enterprise_cpv_codes",
        sa.Column("enterprise_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(8), nullable=False),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprises.id"],
            name=op.f("fk_enterprise_cpv_codes_enterprise_id_enterprises"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("enterprise_id", "code", name=op.f("pk_enterprise_cpv_codes")),
    )
    op.create_index("ix_enterprise_cpv_codes_code", "enterprise_cpv_codes", ["code"])

    op.create_table(
        "enterprise_milestones",
        sa.Column("enterprise_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("evidence", Json, nullable=True),
        sa.Column("value_pence", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("submitted_at", UtcDateTime(), nullable=True),
        sa.Column("submitted_by_role", sa.String(20), nullable=True),
        sa.Column("submitted_by_actor", sa.String(200), nullable=True),
        sa.Column("submitted_by_subject", sa.String(64), nullable=True),
        sa.Column("verified_at", UtcDateTime(), nullable=True),
        sa.Column("verified_by_role", sa.String(20), nullable=True),
        sa.Column("verified_by_actor", sa.String(200), nullable=True),
        sa.Column("verified_by_subject", sa.String(64), nullable=True),
        sa.Column("expiry_warned", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("value_pence >= 0", name=op.f("ck_enterprise_milestones_value_not_negative")),
        sa.ForeignKeyConstraint(
            ["code"],
            ["milestone_definitions.code"],
            name=op.f("fk_enterprise_milestones_code_milestone_definitions"),
        ),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprises.id"],
            name=op.f("fk_enterprise_milestones_enterprise_id_enterprises"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("enterprise_id", "code", name=op.f("pk_enterprise_milestones")),
    )
    op.create_index(
        "ix_enterprise_milestones_verified_expiry",
        "enterprise_milestones",
        ["expires_at"],
        sqlite_where=sa.text("status = 'verified'"),
        postgresql_where=sa.text("status = 'verified'"),
    )

    op.create_table(
        "history",
        sa.Column("id", BigIntegerKey, autoincrement=True, nullable=False),
        sa.Column("enterprise_id", sa.Uuid(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor_role", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("actor_subject", sa.String(64), nullable=True),
        sa.Column("milestone_code", sa.String(64), nullable=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("changes", Json, nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["enterprise_id"],
            ["enterprises.id"],
            name=op.f("fk_history_enterprise_id_enterprises"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_history")),
    )
    op.create_index("ix_history_enterprise_id_id", "history", ["enterprise_id", "id"])


def downgrade() -> None:
    for table in (
        "history",
        "enterprise_milestones",
        "enterprise_cpv_codes",
        "enterprises",
        "milestone_definitions",
        "demand_lines",
        "cohorts",
    ):
        op.drop_table(table)
