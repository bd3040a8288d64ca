"""Pytest fixtures shared by every test folder (``pytest_plugins`` in the root conftest).

- ``nats_server``: a real nats-server for the session (per xdist worker);
  ``nats_url`` gives each test that server with every stream deleted first.
- ``db_backend``: "sqlite" always, "postgres" when SEEDBED_TEST_POSTGRES_URL is set
  (otherwise that variant is skipped, and the report header says so).
- ``database_factory``: fresh migrated databases per test.

Under pytest-xdist each worker has its own nats-server, databases and ports (``ports.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.testing.databases import POSTGRES_ENV, DatabaseFactory, postgres_admin_url
from shared.testing.nats_server import NatsServer, external_nats_url, reset_jetstream
from shared.testing.ports import server_port

POSTGRES_SKIP = f"PostgreSQL variant skipped: {POSTGRES_ENV} is not set"
EXTERNAL_NATS_SKIP = "external-NATS variant skipped: SEEDBED_TEST_NATS_URL is not set"


def pytest_report_header(config: pytest.Config) -> list[str]:
    postgres = postgres_admin_url()
    nats_url = external_nats_url()
    return [
        f"PostgreSQL variant: enabled ({postgres})" if postgres else POSTGRES_SKIP,
        f"external-NATS variant: enabled ({nats_url})" if nats_url else EXTERNAL_NATS_SKIP,
    ]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats") / "store", port=server_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nats_url(nats_server: NatsServer) -> str:
    """The session's nats-server, with every stream of earlier tests deleted."""
    await reset_jetstream(nats_server.url)
    return nats_server.url


@pytest.fixture
def own_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own, for tests that kill and restart it."""
    server = NatsServer(tmp_path / "nats-store", port=server_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and postgres_admin_url() is None:
        pytest.skip(POSTGRES_SKIP)
    return str(request.param)


@pytest.fixture(params=["embedded", "external"])
def nats_variant(request: pytest.FixtureRequest, nats_server: NatsServer) -> str:
    """The URL of the embedded nats-server, or of SEEDBED_TEST_NATS_URL's server."""
    if request.param == "external":
        url = external_nats_url()
        if url is None:
            pytest.skip(EXTERNAL_NATS_SKIP)
        return url
    return nats_server.url


@pytest.fixture(scope="session")
def _database_factory_sync(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"), postgres_admin_url(), spares=2)
    yield factory
    asyncio.run(factory.drop_all())


@pytest.fixture
async def database_factory(
    _database_factory_sync: DatabaseFactory,
) -> AsyncIterator[DatabaseFactory]:
    """The session's factory; the PostgreSQL databases the test made are dropped once it is over
    (its fixtures that use them are torn down before this one)."""
    factory = _database_factory_sync
    before = len(factory.copies)
    yield factory
    factory.release(factory.copies[before:])
