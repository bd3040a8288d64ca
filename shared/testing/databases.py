"""Fresh, migrated databases for tests: SQLite files, and PostgreSQL when a URL is given.

Each kind of database is migrated once per test session into a template; every
test then gets its own copy (a file copy on SQLite, ``CREATE DATABASE ...
TEMPLATE`` on PostgreSQL), so tests are isolated and still fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from shared.migrations import upgrade

Prepare = Callable[[str], Awaitable[None]]
T = TypeVar("T")

POSTGRES_ENV = "SEEDBED_TEST_POSTGRES_URL"


def sqlite_write_lock_held(url: str) -> bool:
    """Whether another connection is refused the write lock of the SQLite database at ``url``
    right now (a probe: ``BEGIN IMMEDIATE`` without waiting, then ``ROLLBACK``)."""
    path = make_url(url).database
    assert path, "a SQLite file database"
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()


def postgres_admin_url() -> str | None:
    """The PostgreSQL server named by SEEDBED_TEST_POSTGRES_URL (any database on it)."""
    return os.environ.get(POSTGRES_ENV) or None


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _sqlalchemy_url(url: str, database: str) -> str:
    parsed = make_url(url).set(drivername="postgresql+asyncpg", database=database)
    return parsed.render_as_string(hide_password=False)


class DatabaseFactory:
    """Creates one database per test from a per-session migrated template.

    On PostgreSQL, with ``spares``, a few copies of each template are made ahead, in the
    background, so that a test does not wait for its copy; and the copies handed back with
    ``release`` (the ``database_factory`` fixture does, once its test is over) are dropped in
    the background too, a batch at a time, instead of all at the end of the session.
    """

    def __init__(self, root: Path, postgres_url: str | None = None, *, spares: int = 0) -> None:
        self.root = Path(root)
        self.postgres_url = postgres_url
        self.spares = spares
        self.run_id = uuid.uuid4().hex[:8]
        self._templates: dict[tuple[str, str], str] = {}
        self._admin: _PostgresAdmin | None = None
        self.copies: list[str] = []  # URLs of the PostgreSQL copies handed out, in order

    async def create(self, backend: str, name: str, prepare: Prepare) -> str:
        """A new database of ``backend`` ("sqlite" or "postgres") prepared by ``prepare``."""
        key = (backend, name)
        if key not in self._templates:
            self._templates[key] = await self._template(backend, name, prepare)
        template = self._templates[key]
        if backend == "sqlite":
            path = self.root / f"{name}-{uuid.uuid4().hex[:10]}.db"
            shutil.copyfile(template, path)
            return f"sqlite+aiosqlite:///{path}"
        assert self._admin is not None and self.postgres_url is not None
        database = await self._admin.call(self._admin.copy(template))
        url = _sqlalchemy_url(self.postgres_url, database)
        self.copies.append(url)
        return url

    def release(self, urls: list[str]) -> None:
        """Nothing uses these copies any more: drop them (in the background)."""
        if self._admin is not None:
            self._admin.release([str(make_url(url).database) for url in urls])

    async def _template(self, backend: str, name: str, prepare: Prepare) -> str:
        if backend == "sqlite":
            self.root.mkdir(parents=True, exist_ok=True)
            path = self.root / f"template-{name}.db"
            await prepare(f"sqlite+aiosqlite:///{path}")
            return str(path)
        if self.postgres_url is None:
            raise RuntimeError(f"{POSTGRES_ENV} is not set")
        if self._admin is None:
            self._admin = _PostgresAdmin(_asyncpg_dsn(self.postgres_url), f"seedbed_t_{self.run_id}_")
        database = f"seedbed_tpl_{self.run_id}_{name}"
        await self._admin.call(self._admin.create_template(database))
        await prepare(_sqlalchemy_url(self.postgres_url, database))
        self._admin.ready(database, self.spares)
        return database

    async def drop_all(self) -> None:
        """Drop every PostgreSQL database this factory made (templates last)."""
        if self._admin is not None:
            admin, self._admin = self._admin, None
            self._templates = {k: v for k, v in self._templates.items() if k[0] != "postgres"}
            await admin.call(admin.drop_all())
            admin.close()


class _PostgresAdmin:
    """CREATE and DROP DATABASE for one factory, on a thread and event loop of its own (the
    tests' loops come and go; its connections and background work stay)."""

    # Several drops at once: each DROP DATABASE waits for a checkpoint, which concurrent drops
    # share. Released copies wait for a batch, so that they share one too.
    CONNECTIONS = 8
    BATCH = 16

    def __init__(self, dsn: str, prefix: str) -> None:
        self.dsn = dsn
        self.prefix = prefix
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-databases", daemon=True)
        self.thread.start()
        # Touched on the admin loop only:
        self.pool: asyncpg.Pool | None = None
        self.strategy = ""
        self.templates: list[str] = []
        self.spares: dict[str, list[str]] = {}
        self.wanted: dict[str, int] = {}
        self.filling: dict[str, asyncio.Task[None]] = {}
        self.made: set[str] = set()  # copies that exist and are not being dropped
        self.released: list[str] = []
        self.work: set[asyncio.Task[None]] = set()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """Run ``coroutine`` on the admin loop; await the result from any loop."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def ready(self, template: str, spares: int) -> None:
        self.loop.call_soon_threadsafe(self._want, template, spares)

    def release(self, databases: list[str]) -> None:
        self.loop.call_soon_threadsafe(self._release, databases)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    # -- on the admin loop --------------------------------------------------------------------

    async def _execute(self, statement: str) -> None:
        if self.pool is None:
            # Connections beyond the first close once idle: the tests need theirs.
            self.pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.CONNECTIONS, max_inactive_connection_lifetime=2.0
            )
            version = int(await self.pool.fetchval("SHOW server_version_num"))
            # How PostgreSQL copies a template: file by file where it can choose (15 and later).
            # Its default from 15 on, WAL_LOG, copies through shared buffers: every copy leaves
            # the pages of a whole database dirty, and each DROP DATABASE (which waits for a
            # checkpoint) writes them out; FILE_COPY leaves the drops little to write.
            self.strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""
        await self.pool.execute(statement)

    async def create_template(self, database: str) -> None:
        await self._execute(f'CREATE DATABASE "{database}"')
        self.templates.append(database)

    async def _make(self, template: str) -> str:
        database = f"{self.prefix}{uuid.uuid4().hex[:10]}"
        await self._execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"{self.strategy}')
        self.made.add(database)
        return database

    async def copy(self, template: str) -> str:
        spares = self.spares.get(template)
        database = spares.pop(0) if spares else await self._make(template)
        self._fill(template)
        return database

    def _want(self, template: str, spares: int) -> None:
        self.spares[template] = []
        self.wanted[template] = spares
        self._fill(template)

    def _fill(self, template: str) -> None:
        if template in self.filling or len(self.spares[template]) >= self.wanted[template]:
            return

        async def fill() -> None:
            try:
                with contextlib.suppress(Exception):  # copy() then makes its own, and says why if it fails
                    while len(self.spares[template]) < self.wanted[template]:
                        self.spares[template].append(await self._make(template))
            finally:
                del self.filling[template]

        self.filling[template] = self._spawn(fill())

    def _release(self, databases: list[str]) -> None:
        self.released += [d for d in databases if d in self.made]
        if len(self.released) >= self.BATCH:
            batch, self.released = self.released, []
            self._spawn(self._drop(batch))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coroutine)
        self.work.add(task)
        task.add_done_callback(self.work.discard)
        return task

    async def _drop(self, databases: list[str]) -> None:
        for database in databases:
            self.made.discard(database)
        queue = list(databases)

        async def drop_each() -> None:
            while queue:
                await self._execute(f'DROP DATABASE IF EXISTS "{queue.pop()}" WITH (FORCE)')

        await asyncio.gather(*(drop_each() for _ in range(min(self.CONNECTIONS, len(queue)))))

    async def drop_all(self) -> None:
        self.wanted = dict.fromkeys(self.wanted, 0)  # no more spares
        while self.work:
            await asyncio.gather(*self.work, return_exceptions=True)
        await self._drop(sorted(self.made))
        await self._drop(self.templates)
        self.templates = []
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


def alembic_prepare(service_dir: Path) -> Prepare:
    """A ``prepare`` that runs the service's migrations (``alembic upgrade head``)."""

    async def prepare(url: str) -> None:
        await asyncio.to_thread(upgrade, service_dir, url)

    return prepare
