"""The whole system as real processes, for tests that drive it from outside.

``running_system(root, databases)`` boots it: its own nats-server, the three services as
uvicorn processes on fresh migrated SQLite databases, and the gateway in front of them with a
bootstrap staff key. ``System`` lets a test stop, freeze or restart a part (its ``nats`` can be
killed and started again on the same port and store).

Apps are named by their uvicorn import strings (``APPS``): ``shared`` imports no service and
no gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from shared.testing.apps import TEST_SECRET
from shared.testing.databases import DatabaseFactory, alembic_prepare
from shared.testing.nats_server import NatsServer, stop_process
from shared.testing.ports import server_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("enterprises", "demand", "mentoring")
# Each part of the system: its uvicorn factory and the folder of its migrations.
APPS = {name: f"services.{name}.app:create_app" for name in SERVICES} | {"gateway": "gateway.app:create_app"}
MIGRATIONS = {name: ROOT / "services" / name for name in SERVICES} | {"gateway": ROOT / "gateway"}
BOOTSTRAP_KEY = "sbk_" + secrets.token_urlsafe(32)
# Per process; a machine shared by many runs may need more (SEEDBED_TEST_START_TIMEOUT).
START_TIMEOUT = float(os.environ.get("SEEDBED_TEST_START_TIMEOUT", "60"))


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
                "--no-proxy-headers",  # the gateway trusts only GATEWAY_TRUSTED_PROXIES
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
        stop_process(self.process, timeout)
        self.process = None

    def freeze(self) -> None:
        """Stop the process answering (SIGSTOP): connections are accepted, nothing comes back."""
        assert self.process is not None
        freeze(self.process)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def freeze(process: subprocess.Popen[bytes]) -> None:
    """SIGSTOP, then wait until every thread of the process has stopped: a thread already on a
    core when the signal comes may otherwise answer one more request (Linux's /proc)."""
    process.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 10
    tasks = Path(f"/proc/{process.pid}/task")
    while time.monotonic() < deadline:
        states = []
        for stat in tasks.glob("*/stat"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.005)
    raise TimeoutError(f"process {process.pid} did not stop on SIGSTOP")


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

    async def subject(self, role: str) -> str:
        """The id of a new, real object for a key of ``role`` (an anchor, enterprise or mentor):
        the gateway refuses keys bound to objects that do not exist."""
        tag = uuid.uuid4().hex[:8]
        path, body = {
            "anchor": ("/anchors", {"name": f"Anchor {tag}", "type": "local_authority"}),
            "enterprise": (
                "/enterprises",
                {
                    "name": f"Enterprise {tag}",
                    "legal_form": "cic_limited_by_guarantee",
                    "postcode": "LS6 2QR",
                    "cpv_codes": ["55300000"],
                    "employees": 4,
                    "turnover_pence": 25_000_000,
                    "vcse": True,
                    "stage": "incubating",
                },
            ),
            "mentor": (
                "/mentors",
                {
                    "name": f"Mentor {tag}",
                    "email": f"mentor.{tag}@mentors.example",
                    "organisation": "Leeds Anchor Network",
                    "expertise": ["insurance"],
                    "timezone": "Europe/London",
                    "session_lengths_minutes": [60],
                    "availability": {"weekly": []},
                },
            ),
        }[role]
        async with self.client() as http:
            response = await http.post(f"/api/v1{path}", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def create_key(self, role: str, subject_id: str | None = None, **extra: Any) -> dict[str, Any]:
        """A key of ``role``; for a role bound to an object and no ``subject_id``, a new real one."""
        if subject_id is None and role in ("anchor", "enterprise", "mentor"):
            subject_id = await self.subject(role)
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


def base_environ() -> dict[str, str]:
    """This process's environment without the system's own settings (``GATEWAY_``, ``SEEDBED_``)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SEEDBED_"))}


def service_env(base: dict[str, str], database_urls: dict[str, str], nats_url: str) -> dict[str, str]:
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
        # Every test calls from 127.0.0.1 for a whole session, many with bad credentials on
        # purpose: the per-address failure limit (tested on its own) would refuse them all.
        "GATEWAY_AUTH_FAILURE_LIMIT_PER_MINUTE": "1000000",
    }
    return env


@contextlib.contextmanager
def running_system(
    root: Path,
    databases: DatabaseFactory,
    *,
    apps: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[System]:
    """The whole system running in ``root`` (logs, NATS store), stopped on exit. ``apps``
    replaces the import string of a part (e.g. a service made with a test clock); ``env`` is
    added to every process's environment."""
    apps = APPS | dict(apps or {})
    nats = NatsServer(root / "nats", port=server_port())
    nats.start()
    everything: list[Process] = []
    try:

        async def create() -> dict[str, str]:
            return {
                name: await databases.create("sqlite", name, alembic_prepare(MIGRATIONS[name]))
                for name in (*SERVICES, "gateway")
            }

        common = service_env(base_environ(), asyncio.run(create()), nats.url) | dict(env or {})
        services = {
            name: Process(name, apps[name], server_port(), common, root / f"{name}.log") for name in SERVICES
        }
        gateway_env = common | {f"GATEWAY_{name.upper()}_URL": p.url for name, p in services.items()}
        gateway = Process("gateway", apps["gateway"], server_port(), gateway_env, root / "gateway.log")
        everything = [*services.values(), gateway]
        for process in everything:
            process.start()
        for process in everything:
            process.wait_ready("/readyz")
        _wait_for_whole_documents(gateway.url)
        _wait_for_the_milestone_catalogue(services["demand"].env["DEMAND_DATABASE_URL"])
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


def _wait_for_the_milestone_catalogue(database_url: str, timeout: float = START_TIMEOUT) -> None:
    """Until the demand service holds its copy of the milestone catalogue, which the enterprises
    service announces when it starts: until then demand refuses lines with requirements, and a
    test posting one at once would race the announcement."""
    path = make_url(database_url).database
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(str(path))) as db:
            if db.execute("SELECT count(*) FROM milestone_catalogue").fetchone()[0] > 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError("the demand service has not received the milestone catalogue")
        time.sleep(0.1)


def _wait_for_whole_documents(url: str, timeout: float = START_TIMEOUT) -> None:
    """Until the gateway's OpenAPI and AsyncAPI documents hold every service: it fetches them
    in the background and, on a loaded machine, may not have every one yet when it is ready."""
    headers = {"Authorization": f"Bearer {BOOTSTRAP_KEY}"}
    deadline = time.monotonic() + timeout
    for path in ("/openapi.json", "/api/v1/asyncapi.json"):
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                info = httpx.get(url + path, headers=headers, timeout=10).json().get("info", {})
                if not info.get("x-seedbed-unavailable-services"):
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway's {path} still lacks a service")
            time.sleep(0.1)
