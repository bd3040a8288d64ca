"""Alembic environment of the demand service: its own metadata, its own database."""

from services.demand.models import metadata
from services.demand.settings import DemandSettings
from shared.migrations import run_migrations

run_migrations(metadata, DemandSettings().database_url)
