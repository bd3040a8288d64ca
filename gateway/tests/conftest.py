"""Fixtures of the gateway tests.

- ``gateway_database_url``: a fresh, migrated gateway database (SQLite, and PostgreSQL when
  enabled) per test.
- ``system``: the whole system running, once per test session (per xdist worker): its own
  nats-server, the three services as uvicorn processes on fresh migrated databases, and the
  gateway as a uvicorn process in front of them, with a bootstrap staff key.
- ``gateway_app``: an in-process gateway (its lifespan run) for tests that look inside it,
  pointed at the running services; call it again for a second replica.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shared.testing.apps import TEST_SECRET, running
from shared.testing.databases import DatabaseFactory, alembic_prepare
from shared.testing.nats_server import NatsServer
from shared.testing.polling import wait_until  # noqa: F401 - the gateway tests import it from here
from shared.testing.ports import server_port
from shared.testing.system import (
    BOOTSTRAP_KEY,
    MIGRATIONS,
    SERVICES,
    Process,
    System,
    base_environ,
    running_system,
    service_env,
)

GATEWAY_DIR = MIGRATIONS["gateway"]


@pytest.fixture
async def gateway_database_url(db_backend: str, database_factory: DatabaseFactory) -> str:
    return await database_factory.create(db_backend, "gateway", alembic_prepare(GATEWAY_DIR))


@pytest.fixture(scope="session")
def system(
    tmp_path_factory: pytest.TempPathFactory, _database_factory_sync: DatabaseFactory
) -> Iterator[System]:
    """The whole system running. Its own nats-server: other tests reset the shared one's
    streams between tests, which would pull the streams from under these long-lived services."""
    with running_system(
        tmp_path_factory.mktemp("system"),
        _database_factory_sync,
        env={"GATEWAY_CORS_ORIGINS": '["https://portal.example"]'},
    ) as booted:
        yield booted


def gateway_settings(
    database_url: str, nats_url: str, upstreams: dict[str, str], **extra: Any
) -> GatewaySettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "nats_url": nats_url,
        "internal_secret": TEST_SECRET,
        "environment": "test",
        "access_log": False,
        "bootstrap_staff_key": BOOTSTRAP_KEY,
        # Port 9 (discard) has no listener here: a service that is not running.
        "enterprises_url": upstreams.get("enterprises", "http://127.0.0.1:9"),
        "demand_url": upstreams.get("demand", "http://127.0.0.1:9"),
        "mentoring_url": upstreams.get("mentoring", "http://127.0.0.1:9"),
    }
    return GatewaySettings(**(values | extra))


GatewayFactory = Callable[..., AbstractAsyncContextManager[FastAPI]]


def _gateway_factory(gateway_database_url: str, nats_url: str) -> GatewayFactory:
    @asynccontextmanager
    async def start(upstreams: dict[str, str] | None = None, **extra: Any) -> AsyncIterator[FastAPI]:
        options = {"database_url": gateway_database_url, "nats_url": nats_url} | extra
        settings = gateway_settings(
            options.pop("database_url"), options.pop("nats_url"), upstreams or {}, **options
        )
        app = create_app(settings)
        async with running(app):
            yield app

    return start


@pytest.fixture
def gateway_app(gateway_database_url: str, nats_url: str) -> GatewayFactory:
    """``async with gateway_app(upstreams={...}, **settings) as app:`` runs a gateway in-process
    (on each database backend)."""
    return _gateway_factory(gateway_database_url, nats_url)


@pytest.fixture
async def sqlite_gateway_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create("sqlite", "gateway", alembic_prepare(GATEWAY_DIR))


@pytest.fixture
def gateway_over(sqlite_gateway_url: str, nats_url: str) -> GatewayFactory:
    """Like ``gateway_app``, on SQLite only: for tests about the path to services, not storage."""
    return _gateway_factory(sqlite_gateway_url, nats_url)


@pytest.fixture(scope="session")
def echo_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The instrumented upstream (``echo_upstream.py``) as a real uvicorn process."""
    env = dict(os.environ) | {"SEEDBED_INTERNAL_SECRET": TEST_SECRET, "PYTHONUNBUFFERED": "1"}
    process = Process(
        "echo",
        "gateway.tests.echo_upstream:create_app",
        server_port(),
        env,
        tmp_path_factory.mktemp("echo") / "echo.log",
    )
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def client_of(app: FastAPI, key: str | None = BOOTSTRAP_KEY, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client calling an in-process gateway, sending ``key`` as its bearer credential."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 50000)),
        base_url="http://gateway",
        headers=headers,
        **kwargs,
    )


def free_tcp_port() -> int:
    return server_port()


@pytest.fixture(scope="session")
def echo_gateway(
    echo_upstream: Process,
    tmp_path_factory: pytest.TempPathFactory,
    _database_factory_sync: DatabaseFactory,
) -> Iterator[Process]:
    """A gateway process whose three upstreams are all the instrumented upstream. Its own
    nats-server: a gateway keeps SEEDBED_EVENTS and consumes it (``gateway-webhooks``), which on
    the shared server would take the events of the in-process gateways of other tests."""
    root = tmp_path_factory.mktemp("echo-gateway")
    nats = NatsServer(root / "nats", port=server_port())
    nats.start()
    database_url = asyncio.run(
        _database_factory_sync.create("sqlite", "gateway", alembic_prepare(GATEWAY_DIR))
    )
    env = service_env(base_environ(), {"gateway": database_url}, nats.url)
    for name in SERVICES:
        env[f"GATEWAY_{name.upper()}_URL"] = echo_upstream.url
    env["GATEWAY_CORS_ORIGINS"] = '["https://portal.example"]'
    env["SEEDBED_ACCESS_LOG"] = "false"
    process = Process("echo-gateway", "gateway.app:create_app", server_port(), env, root / "gateway.log")
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
        nats.stop()
