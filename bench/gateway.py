"""Gateway pass-through figures (issue 6): the same authenticated GET through the gateway and
straight to the service (with a valid internal principal header), one uvicorn worker each.

Prints, for 64 connections (throughput) and 8 connections (light load): requests/s, p50 and
p99, the gateway's throughput as a ratio of the direct one, the latency it adds at p50, and
the CPU time per request of the gateway process (from /proc) against the service's own.
Direct and gateway phases alternate in pairs; the summary gives the medians of the pairs.
Targets: at least 0.70x the direct throughput; at most 2 ms added at p50 under light load.

    python -m bench.gateway [--seconds 3] [--rounds 5] [--access-log] [--route template|anchor]

The load generator is a separate process (asyncio on raw sockets, HTTP/1.1 keep-alive), so
its CPU is not the gateway's. The machine is shared: run it more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import httpx

from shared.migrations import upgrade
from shared.principal import Principal, encode_principal, sign
from shared.testing.nats_server import NatsServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = secrets.token_urlsafe(48)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the load generator (run in its own process) -----------------------------------------------


async def _connection(host: str, port: int, request: bytes, deadline: float, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = errors = 0
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                lowered = name.strip().lower()
                if lowered == b"content-length":
                    length = int(value)
                elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors += 1
            done += 1
    finally:
        writer.close()
    return errors


async def _load(url: str, path: str, headers: dict[str, str], connections: int, seconds: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    errors = await asyncio.gather(
        *(_connection(host, int(port), request, deadline, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    count = len(latencies)
    return {
        "requests": count,
        "errors": sum(errors),
        "rps": count / elapsed,
        "p50_ms": latencies[count // 2] * 1000 if count else 0.0,
        "p99_ms": latencies[min(count - 1, int(count * 0.99))] * 1000 if count else 0.0,
    }


def loadgen_main(args: argparse.Namespace) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    headers = json.loads(args.headers)
    result = asyncio.run(_load(args.loadgen, args.path, headers, args.connections, args.seconds))
    print(json.dumps(result))


def run_load(url: str, path: str, headers: dict[str, str], connections: int, seconds: float) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.gateway",
            "--loadgen",
            url,
            "--path",
            path,
            "--headers",
            json.dumps(headers),
            "--connections",
            str(connections),
            "--seconds",
            str(seconds),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# -- the system under test -----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def start(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(url)


def warm(url: str, path: str, headers: dict, connections: int) -> None:
    """Fill connection pools and caches before measuring."""
    run_load(url, path, headers, connections, 1.5)


def ratio(direct: dict, through: dict) -> float:
    return float(through["rps"] / direct["rps"])


def added(direct: dict, through: dict) -> float:
    return float(through["p50_ms"] - direct["p50_ms"])


def measure(
    label: str, url: str, path: str, headers: dict, connections: int, seconds: float, pid: int
) -> dict:
    before = cpu_seconds(pid)
    result = run_load(url, path, headers, connections, seconds)
    result["cpu_us_per_request"] = (cpu_seconds(pid) - before) / max(result["requests"], 1) * 1e6
    result["label"] = label
    return result


def direct_headers(path: str) -> dict[str, str]:
    # Signed now: valid for the kit's 30 s window, longer than any phase (plus its warm-up).
    payload = encode_principal(Principal(role="staff", subject_id=None, actor="bench"))
    return {"X-Seedbed-Principal": sign(SECRET.encode(), "GET", path, payload)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=5, help="direct/gateway pairs per connection count")
    parser.add_argument("--access-log", action="store_true", help="keep the JSON access log on (as deployed)")
    parser.add_argument(
        "--route",
        choices=("template", "anchor"),
        default="template",
        help="template: GET /demand/imports/template.csv (no database); anchor: GET /anchors/{id} (SQLite)",
    )
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="", help=argparse.SUPPRESS)
    parser.add_argument("--headers", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        loadgen_main(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        root = Path(tmp)
        nats = NatsServer(root / "nats")
        nats.start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            urls = {name: f"sqlite+aiosqlite:///{root / name}.db" for name in ("demand", "gateway")}
            upgrade(ROOT / "services" / "demand", urls["demand"])
            upgrade(ROOT / "gateway", urls["gateway"])
            staff_key = "sbk_" + secrets.token_urlsafe(32)
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SEEDBED_", "DEMAND_"))
            }
            env |= {
                "NATS_URL": nats.url,
                "SEEDBED_INTERNAL_SECRET": SECRET,
                "SEEDBED_ENVIRONMENT": "test",
                "SEEDBED_ACCESS_LOG": "true" if args.access_log else "false",
                "SEEDBED_BOOTSTRAP_STAFF_KEY": staff_key,
                "DEMAND_DATABASE_URL": urls["demand"],
                "GATEWAY_DATABASE_URL": urls["gateway"],
                "GATEWAY_STAFF_RATE_LIMIT_PER_MINUTE": "100000000",  # measure the path, not the limit
            }
            service_url = f"http://127.0.0.1:{free_port()}"
            gateway_url = f"http://127.0.0.1:{free_port()}"
            env["GATEWAY_DEMAND_URL"] = service_url
            service = start(
                "services.demand.app:create_app", int(service_url.rsplit(":", 1)[1]), env, root / "s.log"
            )
            processes.append(service)
            wait_ready(service_url)
            gateway = start("gateway.app:create_app", int(gateway_url.rsplit(":", 1)[1]), env, root / "g.log")
            processes.append(gateway)
            wait_ready(gateway_url)

            with httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {staff_key}"}) as http:
                key = http.post("/api/v1/api-keys", json={"role": "staff", "name": "bench"}).json()["key"]
                anchor = http.post(
                    "/api/v1/anchors", json={"name": "Bench Council", "type": "local_authority"}
                )
                anchor.raise_for_status()
            # The default route does no database work: the figures are the path's, not SQLite's.
            path = (
                f"/api/v1/anchors/{anchor.json()['id']}"
                if args.route == "anchor"
                else "/api/v1/demand/imports/template.csv"
            )
            via_gateway = {"Authorization": f"Bearer {key}"}

            print(
                f"GET {path}: the service's own handler, one worker per process, {args.seconds:g} s a phase"
            )
            print(f"access log {'on' if args.access_log else 'off'} in both processes\n")
            header = (
                f"{'conns':>5} {'pair':>4} {'path':<8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
                f"{'cpu us/req':>10}  {'ratio':>6} {'+p50 ms':>7}"
            )
            print(header)
            print("-" * len(header))
            summary = []
            for connections in (64, 8):
                # Direct and gateway phases alternate, so a burst of load from elsewhere on this
                # shared machine hits both sides of a pair; the medians of the pairs are the figures.
                warm(service_url, path, direct_headers(path), connections)
                warm(gateway_url, path, via_gateway, connections)
                pairs = []
                seconds = args.seconds
                for pair in range(1, args.rounds + 1):
                    signed = direct_headers(path)
                    direct = measure("direct", service_url, path, signed, connections, seconds, service.pid)
                    through = measure(
                        "gateway", gateway_url, path, via_gateway, connections, seconds, gateway.pid
                    )
                    pairs.append((direct, through))
                    for result in (direct, through):
                        extra = ""
                        if result is through:
                            extra = f"  {ratio(direct, through):>5.2f}x {added(direct, through):>+7.2f}"
                        print(
                            f"{connections:>5} {pair:>4} {result['label']:<8} {result['rps']:>8.0f} "
                            f"{result['p50_ms']:>7.2f} {result['p99_ms']:>7.2f} "
                            f"{result['cpu_us_per_request']:>10.0f}{extra}"
                        )
                        if result["errors"]:
                            print(f"           {result['errors']} answers were not 200")
                summary.append((connections, pairs))
            print("\nmedians of the pairs")
            for connections, pairs in summary:
                directs, throughs = [d for d, _ in pairs], [g for _, g in pairs]
                p50_direct = median(r["p50_ms"] for r in directs)
                p50_through = median(r["p50_ms"] for r in throughs)
                print(
                    f"{connections:>3} connections: direct {median(r['rps'] for r in directs):.0f} req/s, "
                    f"gateway {median(r['rps'] for r in throughs):.0f} req/s, "
                    f"ratio {median(ratio(d, g) for d, g in pairs):.2f}x; "
                    f"p50 {p50_direct:.2f} -> {p50_through:.2f} ms "
                    f"({median(added(d, g) for d, g in pairs):+.2f} ms); "
                    f"cpu per request: gateway {median(r['cpu_us_per_request'] for r in throughs):.0f} us, "
                    f"service {median(r['cpu_us_per_request'] for r in directs):.0f} us"
                )
            print(
                "\nratio: gateway req/s over direct req/s (target >= 0.70); +p50: latency the gateway adds "
                "(target <= 2 ms at 8 connections); cpu us/req: CPU time of that process (the gateway, or "
                "the service when direct) per request."
            )
        finally:
            for process in reversed(processes):
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
            nats.stop()


if __name__ == "__main__":
    main()
