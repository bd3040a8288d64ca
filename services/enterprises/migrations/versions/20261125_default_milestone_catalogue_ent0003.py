"""The default readiness milestone catalogue (DOMAIN.md), with the rules that say when each applies.

The catalogue is data: this migration holds its own copy, so later code changes never
rewrite what an existing database was seeded with. Staff add their own definitions
through the API.

Revision ID: ent0003
Revises: ent0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.db import UtcDateTime

revision: str = "ent0003"
down_revision: str | None = "ent0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GBP = 100  # pence

# (code, name, category, description, applies_when, threshold_pence, validity_days, core)
CATALOGUE = [
    (
        "legal_entity",
        "Legal entity",
        "legal",
        "Incorporated or registered, with its registration number known.",
        {"always": True},
        None,
        None,
        True,
    ),
    (
        "cdp_registration",
        "Central Digital Platform registration",
        "bidding",
        "Registered on the Central Digital Platform with core supplier information shared "
        "(needed for above-threshold procurements under the Procurement Act 2023).",
        {"always": True},
        None,
        365,
        True,
    ),
    (
        "exclusions_declaration",
        "Exclusions declaration",
        "legal",
        "Mandatory and discretionary exclusion grounds declared (covered procurements).",
        {"always": True},
        None,
        365,
        True,
    ),
    (
        "financial_standing",
        "Financial standing",
        "financial",
        "Two to three years of accounts, or management accounts for a young enterprise; asked "
        "for when a buyer sets financial conditions.",
        {"always": True},
        None,
        365,
        True,
    ),
    (
        "employers_liability_insurance",
        "Employers' liability insurance",
        "insurance",
        "Employers' liability cover of at least 5m GBP, required by law once there are employees.",
        {"employees_gte": 1},
        5_000_000 * GBP,
        365,
        True,
    ),
    (
        "public_liability_insurance",
        "Public liability insurance",
        "insurance",
        "Public liability cover; the level is set by the buyer (often 1m to 10m GBP). Needed for "
        "services on site or with the public.",
        {"works_with_public": True},
        1_000_000 * GBP,
        365,
        True,
    ),
    (
        "professional_indemnity_insurance",
        "Professional indemnity insurance",
        "insurance",
        "Professional indemnity cover at the level the buyer sets, for advice, design and consultancy.",
        {"provides_professional_advice": True},
        None,
        365,
        True,
    ),
    (
        "health_safety_policy",
        "Health and safety policy",
        "policy",
        "Written health and safety policy and risk assessments (a written policy is required "
        "at 5 or more staff).",
        {"employees_gte": 5},
        None,
        None,
        True,
    ),
    (
        "equality_diversity_policy",
        "Equality and diversity policy",
        "policy",
        "An Equality Act 2010 policy; routinely asked for.",
        {"always": True},
        None,
        None,
        True,
    ),
    (
        "safeguarding_policy",
        "Safeguarding policy",
        "policy",
        "Safeguarding policy and DBS checks, for services to children or vulnerable adults.",
        {"works_with_vulnerable_people": True},
        None,
        1095,
        True,
    ),
    (
        "data_protection",
        "Data protection",
        "policy",
        "UK GDPR policy, ICO fee paid (yearly) and processing terms, when personal data is handled.",
        {"handles_personal_data": True},
        None,
        365,
        True,
    ),
    (
        "cyber_essentials",
        "Cyber Essentials",
        "digital",
        "Cyber Essentials (or Plus) certificate, renewed yearly; for ICT or personal-data contracts.",
        {"any": [{"handles_personal_data": True}, {"cpv_division_in": ["30", "32", "48", "64", "72"]}]},
        None,
        365,
        True,
    ),
    (
        "modern_slavery_statement",
        "Modern slavery statement",
        "policy",
        "Annual modern slavery statement, required at a turnover of 36m GBP or more.",
        {"turnover_pence_gte": 36_000_000 * GBP},
        None,
        365,
        True,
    ),
    (
        "carbon_reduction_plan",
        "Carbon reduction plan",
        "policy",
        "Published carbon reduction plan committing to net zero by 2050; for contracts over 5m GBP a year.",
        {"max_contract_value_pence_gte": 5_000_000 * GBP},
        None,
        365,
        True,
    ),
    (
        "iso_certifications",
        "ISO certifications",
        "accreditation",
        "ISO 9001 / 14001 / 45001 or equivalent; sector-specific, so only when a demand line asks.",
        {"always": False},
        None,
        1095,
        False,
    ),
    (
        "social_value_offer",
        "Social value offer",
        "social_value",
        "Measurable social value commitments (Social Value Model or National TOMs); most "
        "evaluations weigh social value at 10% or more.",
        {"always": True},
        None,
        None,
        True,
    ),
    (
        "case_studies",
        "Case studies",
        "bidding",
        "Relevant contract examples or references, for technical ability questions.",
        {"always": True},
        None,
        None,
        True,
    ),
]

definitions = sa.table(
    "milestone_definitions",
    sa.column("code", sa.String),
    sa.column("name", sa.String),
    sa.column("category", sa.String),
    sa.column("description", sa.Text),
    sa.column("applies_when", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.column("threshold_pence", sa.BigInteger),
    sa.column("validity_days", sa.Integer),
    sa.column("core", sa.Boolean),
    sa.column("builtin", sa.Boolean),
    sa.column("position", sa.Integer),
    sa.column("created_at", UtcDateTime()),
    sa.column("created_by", sa.String),
)


def upgrade() -> None:
    now = datetime.now(UTC)
    op.bulk_insert(
        definitions,
        [
            {
                "code": code,
                "name": name,
                "category": category,
                "description": description,
                "applies_when": rule,
                "threshold_pence": threshold,
                "validity_days": validity,
                "core": core,
                "builtin": True,
                "position": position,
                "created_at": now,
                "created_by": None,
            }
            for position, (code, name, category, description, rule, threshold, validity, core) in enumerate(
                CATALOGUE, start=1
            )
        ],
    )


def downgrade() -> None:
    op.execute(definitions.delete().where(definitions.c.code.in_([row[0] for row in CATALOGUE])))
