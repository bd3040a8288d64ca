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
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shared.nats_server import NatsServer, free_port
from shared.testing.apps import TEST_SECRET, running
from shared.testing.databases import DatabaseFactory, alembic_prepare

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_DIR = ROOT / "gateway"
SERVICES = ("enterprises", "demand", "mentoring")
SERVICE_DIRS = {name: ROOT / "services" / name for name in SERVICES}
BOOTSTRAP_KEY = "sbk_" + secrets.token_urlsafe(32)
START_TIMEOUT = 60.0


@pytest.fixture
async def gateway_database_url(db_backend: str, database_factory: DatabaseFactory) -> str:
    return await database_factory.create(db_backend, "gateway", alembic_prepare(GATEWAY_DIR))


@dataclass
class Process:
    """One uvicorn process of the system, which a test may stop, freeze or restart."""

    name: str
    app: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                self.app,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "3",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait_ready(self, path: str = "/healthz", timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM), without waiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        self.terminate()
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """Stop the process answering (SIGSTOP): connections are accepted, nothing comes back."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class System:
    nats: NatsServer
    services: dict[str, Process]
    gateway: Process
    staff_key: str = BOOTSTRAP_KEY
    secret: str = TEST_SECRET
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.gateway.url

    def upstreams(self) -> dict[str, str]:
        return {name: process.url for name, process in self.services.items()}

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client of the running gateway, sending ``key`` (the staff key by default)."""
        headers = {"Authorization": f"Bearer {key or self.staff_key}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=15, **kwargs)

    async def create_key(self, role: str, subject_id: str | None = None, **extra: Any) -> dict[str, Any]:
        async with self.client() as http:
            response = await http.post(
                "/api/v1/api-keys",
                json={"role": role, "subject_id": subject_id, "name": f"test {role}", **extra},
            )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def restart_service(self, name: str) -> None:
        process = self.services[name]
        process.stop()
        process.start()
        process.wait_ready("/readyz")


def _service_env(base: dict[str, str], database_urls: dict[str, str], nats_url: str) -> dict[str, str]:
    env = dict(base)
    for name, url in database_urls.items():
        env[f"{name.upper()}_DATABASE_URL"] = url
    env |= {
        "NATS_URL": nats_url,
        "SEEDBED_INTERNAL_SECRET": TEST_SECRET,
        "SEEDBED_ENVIRONMENT": "test",
        "SEEDBED_BOOTSTRAP_STAFF_KEY": BOOTSTRAP_KEY,
        "SEEDBED_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    return env


@pytest.fixture(scope="session")
def system(
    tmp_path_factory: pytest.TempPathFactory, _database_factory_sync: DatabaseFactory
) -> Iterator[System]:
    """The whole system running. Its own nats-server: other tests reset the shared one's
    streams between tests, which would pull the streams from under these long-lived services."""
    root = tmp_path_factory.mktemp("system")
    nats = NatsServer(root / "nats")
    nats.start()
    factory = _database_factory_sync

    async def databases() -> dict[str, str]:
        urls = {}
        for name in (*SERVICES, "gateway"):
            directory = GATEWAY_DIR if name == "gateway" else SERVICE_DIRS[name]
            urls[name] = await factory.create("sqlite", name, alembic_prepare(directory))
        return urls

    urls = asyncio.run(databases())
    env = _service_env(
        {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SEEDBED_"))}, urls, nats.url
    )
    services = {
        name: Process(name, f"services.{name}.app:create_app", free_port(), env, root / f"{name}.log")
        for name in SERVICES
    }
    gateway_env = dict(env)
    for name, process in services.items():
        gateway_env[f"GATEWAY_{name.upper()}_URL"] = process.url
    gateway_env["GATEWAY_CORS_ORIGINS"] = '["https://portal.example"]'
    gateway = Process("gateway", "gateway.app:create_app", free_port(), gateway_env, root / "gateway.log")
    everything = [*services.values(), gateway]
    try:
        for process in everything:
            process.start()
        for process in everything:
            process.wait_ready("/readyz")
        yield System(nats, services, gateway)
    finally:
        # All at once: each may take its graceful-shutdown time, and they need not take it in turn.
        for process in everything:
            with contextlib.suppress(Exception):
                if process.process is not None:
                    process.thaw()
            process.terminate()
        for process in everything:
            process.stop(timeout=6)
        nats.stop()


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
        free_port(),
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


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll until ``predicate()`` (sync or async) is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


def free_tcp_port() -> int:
    return free_port()


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
    nats = NatsServer(root / "nats")
    nats.start()
    database_url = asyncio.run(
        _database_factory_sync.create("sqlite", "gateway", alembic_prepare(GATEWAY_DIR))
    )
    env = _service_env(
        {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SEEDBED_"))},
        {"gateway": database_url},
        nats.url,
    )
    for name in SERVICES:
        env[f"GATEWAY_{name.upper()}_URL"] = echo_upstream.url
    env["GATEWAY_CORS_ORIGINS"] = '["https://portal.example"]'
    env["SEEDBED_ACCESS_LOG"] = "false"
    process = Process("echo-gateway", "gateway.app:create_app", free_port(), env, root / "gateway.log")
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
        nats.stop()
