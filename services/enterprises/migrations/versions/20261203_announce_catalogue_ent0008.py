"""Announce the milestone catalogue: one ``enterprises.milestone_definition.published.v1`` in the
outbox for every definition the catalogue holds (the built-in ones and any staff added before the
event existed); from here on adding or changing a definition sends its own.

The relay publishes these rows when the service starts, so the demand service's copy of the
catalogue (it checks the requirement codes of demand lines against it) is fed before anyone can
add a definition. The payload is this migration's own copy of the event's fields, as it was when
written. Offline (``--sql``) there are no rows to read, so nothing is announced.

Revision ID: ent0008
Revises: ent0007
Create Date: 2026-12-03
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from shared.db import UtcDateTime
from shared.events import CloudEvent

revision: str = "ent0008"
down_revision: str | None = "ent0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_TYPE = "enterprises.milestone_definition.published.v1"
SOURCE = "/seedbed/enterprises"

definitions = sa.table(
    "milestone_definitions",
    sa.column("code", sa.String),
    sa.column("version", sa.Integer),
    sa.column("name", sa.String),
    sa.column("category", sa.String),
    sa.column("description", sa.Text),
    sa.column("applies_when", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    sa.column("threshold_pence", sa.BigInteger),
    sa.column("validity_days", sa.Integer),
    sa.column("core", sa.Boolean),
    sa.column("builtin", sa.Boolean),
    sa.column("position", sa.Integer),
)

outbox = sa.table(
    "outbox",
    sa.column("id", sa.String),
    sa.column("subject", sa.String),
    sa.column("body", sa.LargeBinary),
    sa.column("created_at", UtcDateTime()),
)


def upgrade() -> None:
    if context.is_offline_mode():
        return
    bind = op.get_bind()
    now = datetime.now(UTC)
    rows = bind.execute(sa.select(definitions).order_by(definitions.c.position, definitions.c.code)).all()
    events = []
    for row in rows:
        payload = {
            "code": row.code,
            "version": row.version,
            "name": row.name,
            "category": row.category,
            "description": row.description,
            "applies_when": dict(row.applies_when or {}),
            "threshold_pence": row.threshold_pence,
            "validity_days": row.validity_days,
            "core": row.core,
            "builtin": row.builtin,
        }
        event = CloudEvent(
            id=str(uuid.uuid4()), type=EVENT_TYPE, source=SOURCE, subject=row.code, data=payload, time=now
        )
        events.append({"id": event.id, "subject": EVENT_TYPE, "body": event.to_bytes(), "created_at": now})
    if events:
        op.bulk_insert(outbox, events)


def downgrade() -> None:
    # Published announcements cannot be taken back; unsent ones simply go.
    op.execute(
        sa.text("DELETE FROM outbox WHERE subject = :type AND sent_at IS NULL").bindparams(type=EVENT_TYPE)
    )
