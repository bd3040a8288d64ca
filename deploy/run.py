"""``make run``: the whole system on one machine, on embedded defaults.

Starts the bundled nats-server (unless ``NATS_URL`` names one), migrates each
service's database, then runs the three services and the gateway as uvicorn
processes under this supervisor, which prefixes their logs, restarts nothing
silently (a child that dies stops the whole system, loudly) and, on Ctrl-C or
SIGTERM, stops every child: gateway first, services next (they publish what
their outbox holds), NATS last. Children also get SIGTERM if the supervisor
itself is killed (PR_SET_PDEATHSIG), so no process is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.nats_server import nats_server_binary, port_open
from shared.settings import var_dir, weak_secret

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("enterprises", "demand", "mentoring")
DEFAULT_PORTS = {"gateway": 8000, "enterprises": 8001, "demand": 8002, "mentoring": 8003}
MIGRATION_DIRS = {
    "enterprises": ROOT / "services" / "enterprises",
    "demand": ROOT / "services" / "demand",
    "mentoring": ROOT / "services" / "mentoring",
    "gateway": ROOT / "gateway",
}
APPS = {
    "enterprises": "services.enterprises.app:create_app",
    "demand": "services.demand.app:create_app",
    "mentoring": "services.mentoring.app:create_app",
    "gateway": "gateway.app:create_app",
}
PR_SET_PDEATHSIG = 1
STOP_TIMEOUT = 15.0
COLOURS = {"nats": 35, "enterprises": 32, "demand": 34, "mentoring": 36, "gateway": 33}


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _port(name: str) -> int:
    return int(os.environ.get(f"SEEDBED_{name.upper()}_PORT", DEFAULT_PORTS[name]))


def _free_port_from(start: int) -> int:
    port = start
    while True:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                port += 1


# What production must be given: nothing is generated for it (a service or gateway started
# alone refuses to start without them too).
PRODUCTION_SECRETS = ("SEEDBED_INTERNAL_SECRET", "GATEWAY_API_KEY_PEPPER", "SEEDBED_BOOTSTRAP_STAFF_KEY")


def _read_or_create(path: Path, make: str) -> str:
    if path.exists():
        return path.read_text().strip()
    # Created private: never readable by others, not even between creation and a chmod.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(make + "\n")
    return make


def production_secret_problems(env: dict[str, str]) -> list[str]:
    """Why the environment's secrets will not do for production (empty when they will)."""
    problems = []
    for name in PRODUCTION_SECRETS:
        value = env.get(name, "")
        if not value:
            problems.append(f"{name} is not set (production generates no secrets)")
        elif (reason := weak_secret(value.removeprefix("sbk_"))) is not None:
            problems.append(f"{name} will not do: {reason}")
    return problems


@dataclass
class Child:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    expected_exit: bool = field(default=False)


class Supervisor:
    def __init__(self) -> None:
        self.var = var_dir().resolve()
        self.env = dict(os.environ)
        self.children: list[Child] = []
        self.stopping = asyncio.Event()
        self.failed: str | None = None
        self.colour = sys.stdout.isatty()

    def say(self, name: str, line: str) -> None:
        label = f"{name:<11}|"
        if self.colour:
            label = f"\x1b[{COLOURS.get(name, 37)}m{label}\x1b[0m"
        sys.stdout.write(f"{label} {line}\n")
        sys.stdout.flush()

    async def _pump(self, child: Child) -> None:
        assert child.process is not None and child.process.stdout is not None
        async for raw in child.process.stdout:
            self.say(child.name, raw.decode(errors="replace").rstrip())
        code = await child.process.wait()
        if not child.expected_exit and not self.stopping.is_set():
            self.failed = f"{child.name} exited unexpectedly with code {code}"
            self.say("supervisor", f"{self.failed}; stopping everything (nothing is restarted)")
            self.stopping.set()

    async def spawn(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv)
        child.process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
            preexec_fn=_die_with_parent,
        )
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)
        return child

    async def run_once(self, name: str, argv: list[str]) -> None:
        child = await self.spawn(name, argv)
        child.expected_exit = True
        assert child.process is not None
        code = await child.process.wait()
        if child.pump is not None:
            await child.pump
        self.children.remove(child)
        if code != 0:
            raise SystemExit(f"{name} failed with exit code {code}")

    def prepare_environment(self) -> tuple[str, str]:
        if self.env.get("SEEDBED_ENVIRONMENT") == "production":
            problems = production_secret_problems(self.env)
            if problems:
                raise SystemExit("refusing to start in production: " + "; ".join(problems))
        self.var.mkdir(parents=True, exist_ok=True)
        self.env["SEEDBED_VAR_DIR"] = str(self.var)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        secret = self.env.get("SEEDBED_INTERNAL_SECRET") or _read_or_create(
            self.var / "internal-secret", secrets.token_urlsafe(48)
        )
        self.env["SEEDBED_INTERNAL_SECRET"] = secret
        staff_key = self.env.get("SEEDBED_BOOTSTRAP_STAFF_KEY") or _read_or_create(
            self.var / "staff-key", "sbk_" + secrets.token_urlsafe(32)
        )
        self.env["SEEDBED_BOOTSTRAP_STAFF_KEY"] = staff_key
        # Keys the HMAC of stored API keys: kept across runs, or every key would stop working.
        self.env["GATEWAY_API_KEY_PEPPER"] = self.env.get("GATEWAY_API_KEY_PEPPER") or _read_or_create(
            self.var / "api-key-pepper", secrets.token_urlsafe(48)
        )
        for service in SERVICES:
            self.env[f"GATEWAY_{service.upper()}_URL"] = f"http://127.0.0.1:{_port(service)}"
        return secret, staff_key

    async def start_nats(self) -> str:
        if self.env.get("NATS_URL"):
            self.say("supervisor", f"using NATS at {self.env['NATS_URL']}")
            return self.env["NATS_URL"]
        port = int(self.env.get("SEEDBED_NATS_PORT") or _free_port_from(4223))
        store = self.var / "nats"
        store.mkdir(parents=True, exist_ok=True)
        await self.spawn(
            "nats",
            [
                nats_server_binary(),
                "--jetstream",
                "--store_dir",
                str(store),
                "--addr",
                "127.0.0.1",
                "--port",
                str(port),
            ],
        )
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", port):
            if time.monotonic() > deadline or self.stopping.is_set():
                raise SystemExit("nats-server did not start")
            await asyncio.sleep(0.05)
        url = f"nats://127.0.0.1:{port}"
        self.env["NATS_URL"] = url
        return url

    async def migrate(self) -> None:
        alembic = str(Path(sys.executable).parent / "alembic")
        await asyncio.gather(
            *(
                self.run_once(
                    f"migrate-{name}"[:11],
                    [alembic, "-c", str(path / "alembic.ini"), "upgrade", "head"],
                )
                for name, path in MIGRATION_DIRS.items()
            )
        )

    async def start_apps(self) -> None:
        for name in (*SERVICES, "gateway"):
            port = _port(name)
            if port_open("127.0.0.1", port):
                raise SystemExit(
                    f"port {port} for {name} is already in use (set SEEDBED_{name.upper()}_PORT)"
                )
            await self.spawn(
                name,
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    APPS[name],
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-access-log",
                    # Forwarded headers: only from GATEWAY_TRUSTED_PROXIES, applied by the gateway.
                    "--no-proxy-headers",
                    "--timeout-graceful-shutdown",
                    "10",
                ],
            )

    async def wait_ready(self, url: str, timeout: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline and not self.stopping.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        return True
                await asyncio.sleep(0.25)
        return False

    async def stop_all(self) -> None:
        order = ["gateway", *SERVICES, "nats"]
        ranked = sorted(self.children, key=lambda c: order.index(c.name) if c.name in order else 0)
        for group in (["gateway"], list(SERVICES), ["nats"]):
            batch = [c for c in ranked if c.name in group]
            for child in batch:
                child.expected_exit = True
                if child.process and child.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.process.pid, signal.SIGTERM)
            for child in batch:
                if child.process is None:
                    continue
                try:
                    await asyncio.wait_for(child.process.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    self.say("supervisor", f"{child.name} did not stop in {STOP_TIMEOUT:g}s; killing it")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.process.pid, signal.SIGKILL)
                    await child.process.wait()
        for child in self.children:
            if child.pump is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(child.pump, 2)

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            _secret, staff_key = self.prepare_environment()
            nats_url = await self.start_nats()
            await self.migrate()
            await self.start_apps()
            gateway = f"http://127.0.0.1:{_port('gateway')}"
            # Each service too: the gateway is ready (degraded) while a service is still starting.
            services = [f"http://127.0.0.1:{_port(name)}" for name in SERVICES]
            if all([await self.wait_ready(url) for url in services]) and await self.wait_ready(gateway):
                key_source = (
                    "SEEDBED_BOOTSTRAP_STAFF_KEY"
                    if "SEEDBED_BOOTSTRAP_STAFF_KEY" in os.environ
                    else self.var / "staff-key"
                )
                banner = [
                    "Seedbed is up.",
                    f"  Gateway:    {gateway}   (API under /api/v1, docs at {gateway}/docs)",
                    f"  Staff key:  {staff_key}   (from {key_source})",
                    f"  NATS:       {nats_url}",
                    f"  Data:       {self.var}",
                    "Press Ctrl-C to stop.",
                ]
                for line in banner:
                    self.say("supervisor", line)
            elif not self.stopping.is_set():
                self.failed = "the gateway did not become ready"
                self.say("supervisor", self.failed + "; stopping")
                self.stopping.set()
            await self.stopping.wait()
        except SystemExit as exc:
            self.failed = str(exc)
            self.say("supervisor", self.failed)
        finally:
            self.say("supervisor", "stopping")
            await self.stop_all()
            self.say("supervisor", "stopped")
        return 1 if self.failed else 0


def main() -> None:
    sys.exit(asyncio.run(Supervisor().main()))


if __name__ == "__main__":
    main()
