"""Pages figures (issue 17): the ``/pipeline`` page against ``GET /api/v1/pipeline``, at 1,000,000 lines.

The demand database is seeded as ``bench.demand`` seeds it (1,000,000 lines from 300 anchors,
written directly, then one snapshot released); the demand service and the gateway then run as
uvicorn processes, one worker each, and this process calls the gateway over loopback with one
keep-alive connection, alternating the two requests so both see the same machine:

- the page: ``GET /pipeline`` (no key), the HTML of the next eight quarters: three views of the
  snapshot (by quarter, by division, division x quarter), revalidated with the service by ETag;
- the API: ``GET /api/v1/pipeline?group_by=cpv_division,quarter&from=..&to=..`` (staff key), the
  heat map's view, as a portal polling it gets it.

Prints p50 and p99 of each, the page's p50 as a ratio of the API's (target: within 2x) and in ms
(target: under 50 ms), and the same for a 304 on ``If-None-Match``.

    python -m bench.pages [--lines 1000000] [--anchors 300] [--samples 300]

Ports: the gateway 18800, demand 18802, NATS 18804 (``--port-base`` moves them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.demand import SERVICE_DIR, Synthetic, percentile, seed
from gateway.pages.figures import PipelineQuery, quarters_from
from services.demand.app import create_app
from services.demand.pipeline import release
from services.demand.settings import DemandSettings
from shared.migrations import upgrade
from shared.testing.nats_server import NatsServer
from shared.testing.system import Process

ROOT = Path(__file__).resolve().parent.parent
SECRET = secrets.token_urlsafe(48)
STAFF_KEY = "sbk_" + secrets.token_urlsafe(32)


async def prepare(url: str, lines: int, anchors: int, nats_url: str) -> tuple[int, float]:
    """Seed the demand database and release one snapshot; (snapshot version, seconds to release)."""
    await asyncio.to_thread(upgrade, SERVICE_DIR, url)
    synthetic = Synthetic()
    seconds = await seed(url, synthetic, synthetic.anchors(anchors), lines)
    print(
        f"seeded {lines:,} lines from {anchors} anchors in {seconds:.1f} s (written directly; not a figure)"
    )
    settings = DemandSettings(
        database_url=url,
        nats_url=nats_url,
        internal_secret=SECRET,
        environment="test",
        access_log=False,
        log_level="WARNING",
        pipeline_publisher=False,
        stale_lines_job=False,  # the seeded lines' dates are not what is measured
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        started = time.perf_counter()
        version = await release.publish_snapshot(app.state.database, settings, force=True)
        return version, time.perf_counter() - started


def measure(
    client: httpx.Client, requests: list[tuple[str, dict[str, str]]], samples: int
) -> list[list[float]]:
    """Each request ``samples`` times, in turn, after a warm-up; seconds per answer."""
    timings: list[list[float]] = [[] for _ in requests]
    for _ in range(10):
        for path, headers in requests:
            client.get(path, headers=headers)
    for _ in range(samples):
        for n, (path, headers) in enumerate(requests):
            started = time.perf_counter()
            response = client.get(path, headers=headers)
            timings[n].append(time.perf_counter() - started)
            assert response.status_code in (200, 304), (path, response.status_code, response.text[:300])
    return timings


def main(args: argparse.Namespace) -> None:
    gateway_port, demand_port, nats_port = args.port_base, args.port_base + 2, args.port_base + 4
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        root = Path(tmp)
        nats = NatsServer(root / "nats", port=nats_port)
        nats.start()
        processes: list[Process] = []
        try:
            database = Path(args.database) if args.database else root / "demand.db"
            demand_url = f"sqlite+aiosqlite:///{database}"
            gateway_db = f"sqlite+aiosqlite:///{root / 'gateway.db'}"
            if database.exists():
                print(f"reusing the seeded and released demand database {database}")
            else:
                version, release_s = asyncio.run(prepare(demand_url, args.lines, args.anchors, nats.url))
                print(f"snapshot {version} released in {release_s:.1f} s")
            upgrade(ROOT / "gateway", gateway_db)
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SEEDBED_", "DEMAND_"))
            }
            env |= {
                "NATS_URL": nats.url,
                "SEEDBED_INTERNAL_SECRET": SECRET,
                "SEEDBED_ENVIRONMENT": "test",
                "SEEDBED_ACCESS_LOG": "false",
                "SEEDBED_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
            demand = Process(
                "demand",
                "services.demand.app:create_app",
                demand_port,
                env | {"DEMAND_DATABASE_URL": demand_url, "DEMAND_PIPELINE_PUBLISHER": "false"},
                root / "demand.log",
            )
            gateway = Process(
                "gateway",
                "gateway.app:create_app",
                gateway_port,
                env
                | {
                    "GATEWAY_DATABASE_URL": gateway_db,
                    "GATEWAY_DEMAND_URL": demand.url,
                    # Nothing listens on port 9: the pages of the pipeline need only the demand service.
                    "GATEWAY_ENTERPRISES_URL": "http://127.0.0.1:9",
                    "GATEWAY_MENTORING_URL": "http://127.0.0.1:9",
                    "SEEDBED_BOOTSTRAP_STAFF_KEY": STAFF_KEY,
                    "GATEWAY_STAFF_RATE_LIMIT_PER_MINUTE": "100000000",
                    "GATEWAY_PAGES_RATE_LIMIT_PER_MINUTE": "100000000",
                    # The first read of each view after a release is computed from the fine cells:
                    # seconds at 1M lines on a loaded machine (cold, once per snapshot; not measured).
                    "GATEWAY_UPSTREAM_TIMEOUT_SECONDS": "600",
                },
                root / "gateway.log",
            )
            processes = [demand, gateway]
            for process in processes:
                process.start()
            for process in processes:
                process.wait_ready("/healthz", timeout=180)

            quarters = quarters_from(datetime.now(UTC).date())
            api_params = PipelineQuery().api_params("cpv_division,quarter", quarters)
            api_path = "/api/v1/pipeline?" + "&".join(f"{k}={v}" for k, v in api_params)
            key = {"Authorization": f"Bearer {STAFF_KEY}"}
            with httpx.Client(base_url=gateway.url, timeout=120) as client:
                started = time.perf_counter()
                first = client.get("/pipeline")
                cold = time.perf_counter() - started
                assert first.status_code == 200, first.text[:500]
                api = client.get(api_path, headers=key)
                assert api.status_code == 200, api.text[:500]
                cells = api.json()["cells"]
                withheld = sum(c["suppressed"] for c in cells)
                print(
                    f"page {len(first.content):,} bytes (first render {cold * 1000:.0f} ms); "
                    f"API answer {len(api.content):,} bytes, {len(cells)} cells ({withheld} withheld)"
                )
                page_tag, api_tag = first.headers["etag"], api.headers["etag"]
                page, api_full, page_304, api_304 = measure(
                    client,
                    [
                        ("/pipeline", {}),
                        (api_path, key),
                        ("/pipeline", {"If-None-Match": page_tag}),
                        (api_path, key | {"If-None-Match": api_tag}),
                    ],
                    args.samples,
                )
        finally:
            for process in processes:
                process.stop()
            nats.stop()

    def line(label: str, values: list[float], baseline: list[float] | None) -> float:
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        ratio = f"{p50 / statistics.median(baseline):.2f}x" if baseline else "1.00x (baseline)"
        print(f"  {label:<44} p50 {p50 * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms   {ratio}")
        return p50

    print(f"\n{args.lines:,} lines, {args.samples} samples each, alternating (one connection):")
    api_p50 = line("GET /api/v1/pipeline (cpv_division,quarter)", api_full, None)
    page_p50 = line("GET /pipeline (the page)", page, api_full)
    line("GET /api/v1/pipeline If-None-Match -> 304", api_304, None)
    line("GET /pipeline If-None-Match -> 304", page_304, api_304)
    ratio = page_p50 / api_p50
    print(
        f"\nsummary: page p50 {page_p50 * 1000:.1f} ms "
        f"({'met' if page_p50 < 0.05 else 'NOT met'}: under 50 ms), "
        f"{ratio:.2f}x the API's p50 ({'met' if ratio <= 2 else 'NOT met'}: within 2x)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--anchors", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--port-base", type=int, default=18800)
    parser.add_argument(
        "--database",
        help="a SQLite file for the demand service, seeded and released only when missing (kept)",
    )
    main(parser.parse_args())
