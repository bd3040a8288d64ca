"""Alembic plumbing shared by every service's ``migrations/env.py``.

Each service keeps its own ``alembic.ini``, ``migrations/`` and version table in
its own database; its first migration spells out the kit tables (outbox, inbox,
dead letters, idempotency keys).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy.engine import Connection

import shared.idempotency
import shared.inbox
import shared.outbox  # noqa: F401 - registers the kit tables
from shared.db import KIT_METADATA, create_engine, is_sqlite_url


def include_kit_tables(metadata: sa.MetaData) -> None:
    """Copy the kit tables into a service's metadata so autogenerate knows them."""
    for table in KIT_METADATA.sorted_tables:
        if table.name not in metadata.tables:
            table.to_metadata(metadata)


def add_kit_columns(columns: dict[str, list[str]]) -> None:
    """Inside a migration: add kit-table columns that came after the table (nullable ones), as
    the kit's metadata declares them; a column already there is left as it is."""
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table_name, names in columns.items():
        present = {column["name"] for column in inspector.get_columns(table_name)}
        table = KIT_METADATA.tables[table_name]
        missing = [name for name in names if name not in present]
        if missing:
            with op.batch_alter_table(table_name) as batch:
                for name in missing:
                    batch.add_column(sa.Column(name, table.c[name].type, nullable=True))


def drop_kit_columns(columns: dict[str, list[str]]) -> None:
    for table_name, names in columns.items():
        with op.batch_alter_table(table_name) as batch:
            for name in names:
                batch.drop_column(name)


def _run(connection: Connection, metadata: sa.MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str, metadata: sa.MetaData) -> None:
    engine = create_engine(url, pooled=False)
    async with engine.connect() as connection:
        await connection.run_sync(_run, metadata)
        await connection.commit()
    await engine.dispose()


def run_migrations(metadata: sa.MetaData, default_url: str) -> None:
    """The body of a service's ``env.py``."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s [migrations] %(message)s")
    url = context.config.get_main_option("sqlalchemy.url") or default_url
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=metadata,
            literal_binds=True,
            render_as_batch=is_sqlite_url(url),
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    if is_sqlite_url(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(_run_online(url, metadata))


def alembic_config(service_dir: Path | str, url: str | None = None) -> Config:
    """The Alembic config of a service folder, optionally pointed at another database."""
    config = Config(str(Path(service_dir) / "alembic.ini"))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(service_dir: Path | str, url: str | None = None, revision: str = "head") -> None:
    """``alembic upgrade head`` for one service (blocking; call it off the event loop)."""
    command.upgrade(alembic_config(service_dir, url), revision)
