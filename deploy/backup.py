"""Back up and restore one Seedbed database, and rewind a service's consumers after a restore.

    python -m deploy.backup backup  --url DATABASE_URL --to FILE
    python -m deploy.backup restore --url DATABASE_URL --from FILE     (the service stopped)
    python -m deploy.backup rewind  --nats-url NATS_URL --service NAME (the service stopped)

SQLite is copied with SQLite's online backup API (a consistent copy while the service
writes); PostgreSQL with ``pg_dump --format=custom`` and ``pg_restore --clean`` (each on the
PATH, as the PostgreSQL client packages install them). ``rewind`` deletes the service's
durable consumers (named ``<service>-...``): they are made again at its next start and read
their streams from the beginning, and the inbox skips every event the restored database had
already applied, so the consumer catches up on what came after the backup, once each.
See docs/operations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import nats
from nats.js.errors import NotFoundError
from sqlalchemy.engine import make_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValueError(f"{url} is not a SQLite file")
    return Path(database)


def libpq_url(url: str) -> str:
    """The URL as pg_dump and pg_restore take it (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def backup(url: str, to: Path) -> None:
    """A consistent copy of the database at ``url`` in ``to``, taken while it runs."""
    to.parent.mkdir(parents=True, exist_ok=True)
    if is_sqlite(url):
        source = sqlite3.connect(sqlite_path(url))
        target = sqlite3.connect(to)
        try:
            with target:
                source.backup(target)
        finally:
            target.close()
            source.close()
        return
    _run(["pg_dump", "--format=custom", "--no-owner", f"--file={to}", libpq_url(url)])


def restore(url: str, source: Path) -> None:
    """Make the database at ``url`` what the backup ``source`` holds (stop the service first)."""
    if not source.exists():
        raise FileNotFoundError(source)
    if is_sqlite(url):
        path = sqlite_path(url)
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
        backup_db = sqlite3.connect(source)
        target = sqlite3.connect(path)
        try:
            with target:
                backup_db.backup(target)
            target.execute("PRAGMA journal_mode=WAL")
        finally:
            target.close()
            backup_db.close()
        return
    _run(
        [
            "pg_restore",
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            f"--dbname={libpq_url(url)}",
            str(source),
        ]
    )


async def rewind(nats_url: str, service: str) -> list[str]:
    """Delete the durable consumers of ``service`` on every stream; returns ``stream:durable``
    of each deleted. The service makes them again when it starts, reading from the start."""
    nc = await nats.connect(nats_url)
    deleted = []
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            name = stream.config.name
            assert name is not None
            for consumer in await js.consumers_info(name):
                durable = consumer.config.durable_name
                if durable and durable.startswith(f"{service}-"):
                    with contextlib.suppress(NotFoundError):
                        await js.delete_consumer(name, durable)
                        deleted.append(f"{name}:{durable}")
    finally:
        await nc.close()
    return deleted


def _run(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        raise FileNotFoundError(f"{command[0]} is not on the PATH (install the PostgreSQL client)")
    subprocess.run(command, check=True)  # noqa: S603 - our own arguments, no shell


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.backup", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("backup", help="copy a database while it runs")
    take.add_argument("--url", required=True, help="the service's DATABASE_URL")
    take.add_argument("--to", required=True, type=Path)
    put = commands.add_parser("restore", help="replace a database with a backup (service stopped)")
    put.add_argument("--url", required=True)
    put.add_argument("--from", dest="source", required=True, type=Path)
    again = commands.add_parser("rewind", help="make a service's consumers read their streams again")
    again.add_argument("--nats-url", required=True)
    again.add_argument("--service", required=True)
    args = parser.parse_args(argv)
    if args.command == "backup":
        backup(args.url, args.to)
    elif args.command == "restore":
        restore(args.url, args.source)
    else:
        for name in asyncio.run(rewind(args.nats_url, args.service)):
            print(f"rewound {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
