"""Alembic environment of the mentoring service: its own metadata, its own database."""

from services.mentoring.models import metadata
from services.mentoring.settings import MentoringSettings
from shared.migrations import run_migrations

run_migrations(metadata, MentoringSettings().database_url)
