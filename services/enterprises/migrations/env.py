"""Alembic environment of the enterprises service: its own metadata, its own database."""

from services.enterprises.models import metadata
from services.enterprises.settings import EnterprisesSettings
from shared.migrations import run_migrations

run_migrations(metadata, EnterprisesSettings().database_url)
