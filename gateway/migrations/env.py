"""Alembic environment of the gateway: its own metadata, its own database."""

from gateway.models import metadata
from gateway.settings import GatewaySettings
from shared.migrations import run_migrations

run_migrations(metadata, GatewaySettings().database_url)
