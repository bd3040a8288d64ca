"""`make run`'s entry point brings the system up ready, and leaves nothing behind when stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from shared.nats_server import port_open
from shared.testing.ports import server_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def processes_of(var_dir: Path) -> list[int]:
    """Pids of live processes started for this var dir (they all carry SEEDBED_VAR_DIR)."""
    marker = f"SEEDBED_VAR_DIR={var_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(") ", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def start_system(var_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    ports = {name: server_port() for name in ("gateway", "enterprises", "demand", "mentoring", "nats")}
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "SEEDBED_BOOTSTRAP_STAFF_KEY")}
    env |= {f"SEEDBED_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    env["SEEDBED_VAR_DIR"] = str(var_dir)
    process = subprocess.Popen(  # the Makefile's `run` target runs exactly this module
        [sys.executable, "-m", "deploy.run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return process, ports


class Output:
    """The supervisor's output as it comes: a thread drains the pipe."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in iter(pipe.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    def wait_for(self, text: str, timeout: float = 30) -> None:
        """Until a line holds ``text``: the supervisor says the system is up only after its own
        readiness check, which may come a moment after the test's."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"no {text!r} in:\n{''.join(self.lines)}"
            time.sleep(0.05)

    def whole(self, timeout: float = 10) -> str:
        """All of it, once the process has ended."""
        self._thread.join(timeout)
        return "".join(self.lines)


def wait_ready(
    process: subprocess.Popen[bytes], gateway_port: int, said: Output | None = None, timeout: float = 120
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                said.whole() if said else process.stdout.read().decode() if process.stdout else ""
            )
        try:
            response = httpx.get(f"http://127.0.0.1:{gateway_port}/readyz", timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError("the gateway did not become ready")


def wait_gone(var_dir: Path, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := processes_of(var_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_make_run_comes_up_ready_and_sigterm_leaves_no_process_or_port(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    process, ports = start_system(var_dir)
    said = Output(process)
    try:
        ready = wait_ready(process, ports["gateway"], said)
        checks = ready.json()["checks"]
        assert {"enterprises", "demand", "mentoring", "nats"} <= checks.keys()
        assert len(processes_of(var_dir)) >= 6  # supervisor, nats, three services, gateway
        staff_key = (var_dir / "staff-key").read_text().strip()
        assert len(staff_key) >= 32
        said.wait_for("Seedbed is up.")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        output = said.whole()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert staff_key in output  # the key was printed with the gateway URL
    assert f"http://127.0.0.1:{ports['gateway']}" in output
    assert wait_gone(var_dir) == []
    assert [name for name, port in ports.items() if port_open("127.0.0.1", port)] == []
    # The data stays for the next run.
    assert (var_dir / "enterprises.db").exists() and (var_dir / "nats").is_dir()


def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    process, ports = start_system(var_dir)
    try:
        wait_ready(process, ports["gateway"])
        process.kill()  # no chance to clean up: the children must notice on their own
        process.wait(10)
        assert wait_gone(var_dir) == []
    finally:
        for pid in processes_of(var_dir):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "given",
    [
        {},  # nothing: production generates no secret
        {  # set, but not random
            "SEEDBED_INTERNAL_SECRET": "a" * 32,
            "GATEWAY_API_KEY_PEPPER": "a" * 32,
            "SEEDBED_BOOTSTRAP_STAFF_KEY": "sbk_" + "a" * 32,
        },
    ],
)
def test_make_run_in_production_refuses_to_generate_or_accept_weak_secrets(
    tmp_path: Path, given: dict[str, str]
) -> None:
    var_dir = tmp_path / "var"
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "NATS_URL",
            "SEEDBED_INTERNAL_SECRET",
            "GATEWAY_API_KEY_PEPPER",
            "SEEDBED_BOOTSTRAP_STAFF_KEY",
        )
    }
    env |= {"SEEDBED_VAR_DIR": str(var_dir), "SEEDBED_ENVIRONMENT": "production", **given}
    done = subprocess.run(  # the Makefile's `run` target runs exactly this module
        [sys.executable, "-m", "deploy.run"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode != 0, output
    for name in ("SEEDBED_INTERNAL_SECRET", "GATEWAY_API_KEY_PEPPER", "SEEDBED_BOOTSTRAP_STAFF_KEY"):
        assert name in output
    assert not any((var_dir / name).exists() for name in ("internal-secret", "api-key-pepper", "staff-key"))
    assert processes_of(var_dir) == []
