"""Enterprises service benchmark: listing and readiness recompute at 100,000 enterprises.

Run: ``python -m bench.enterprises [--enterprises N] [--samples S]``. On SQLite always and on
PostgreSQL when ``SEEDBED_BENCH_POSTGRES_URL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``) answers; the benchmark creates and
drops its own database there.

(a) One page of 50 enterprises from N, three ways taking turns call by call, so that load
    from other processes falls on all of them alike (medians of 300 calls each):
    - baseline: the page's SELECT issued directly through SQLAlchemy Core;
    - use case: ``service.enterprises.list_enterprises`` (the same SELECT plus the API models);
    - HTTP: ``GET /api/v1/enterprises`` through the whole app in-process (signed principal,
      middleware, problem handlers, JSON), as the gateway would call it.
    Figures are median times per page and their ratio to the baseline (target: within 3x).
(b) Readiness for all N enterprises after a catalogue change (a new core definition that
    applies to everyone, so every enterprise's readiness changes and is announced): the
    readiness job's throughput in enterprises per second and the process's peak resident
    memory while it runs (target: under 300 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from services.enterprises.actors import Actor
from services.enterprises.app import create_app
from services.enterprises.jobs import run_readiness_refresh
from services.enterprises.models import enterprise_cpv_codes, enterprise_milestones, enterprises
from services.enterprises.repository import ENTERPRISE_ORDER, EnterpriseFilters, enterprise_list_query
from services.enterprises.schemas import MilestoneDefinitionCreate
from services.enterprises.service import catalogue
from services.enterprises.service import enterprises as enterprise_service
from services.enterprises.settings import EnterprisesSettings
from services.enterprises.sizing import size_class
from shared.db import Database
from shared.migrations import upgrade
from shared.testing.apps import STAFF, TEST_SECRET, client, running
from shared.testing.nats_server import NatsServer

SERVICE_DIR = Path(__file__).resolve().parent.parent / "services" / "enterprises"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
NATS_PORT = 18150
PAGE = 50
WARNING = timedelta(days=30)
LEGAL_FORMS = ("cic_limited_by_guarantee", "company_limited_by_shares", "charity", "cooperative_society")
CPV = ("90910000-9", "55520000-1", "45233140-2", "72000000-5", "79410000-1", "85300000-2", "77300000-3")
VERIFIED = ("legal_entity", "equality_diversity_policy", "case_studies", "employers_liability_insurance")


# --- data ------------------------------------------------------------------------------------


async def seed(database: Database, count: int, chunk: int = 5000) -> None:
    """``count`` enterprises, each supplying one CPV code, with four verified milestones."""
    rng = random.Random(42)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    expires = datetime.now(UTC) + timedelta(days=200)
    for offset in range(0, count, chunk):
        rows, codes, milestones = [], [], []
        for i in range(offset, min(offset + chunk, count)):
            ident = uuid.UUID(int=rng.getrandbits(128), version=4)
            employees = rng.choice([None, 0, 2, 4, 8, 20, 60, 300])
            turnover = rng.choice([None, 5_000_000, 80_000_000, 400_000_000, 2_000_000_000])
            cpv = rng.choice(CPV)
            at = start + timedelta(milliseconds=i)
            rows.append(
                {
                    "id": ident,
                    "name": f"Enterprise {i:06d}",
                    "legal_form": LEGAL_FORMS[i % len(LEGAL_FORMS)],
                    "registration_number": None,
                    "postcode": "LS6 2QR",
                    "stage": rng.choice(["applicant", "incubating", "incubating", "tender_ready"]),
                    "cohort_id": None,
                    "cpv_codes": [cpv],
                    "max_contract_value_pence": rng.choice([None, 10_000_000, 600_000_000]),
                    "employees": employees,
                    "turnover_pence": turnover,
                    "vcse": rng.random() < 0.7,
                    "handles_personal_data": rng.random() < 0.3,
                    "works_with_public": rng.random() < 0.5,
                    "works_with_vulnerable_people": rng.random() < 0.2,
                    "provides_professional_advice": rng.random() < 0.1,
                    "description": None,
                    "website": None,
                    "size_class": size_class(employees, turnover),
                    "version": 1,
                    "created_at": at,
                    "updated_at": at,
                    "readiness_stale": True,
                }
            )
            codes.append({"enterprise_id": ident, "code": cpv[:8]})
            for code in VERIFIED:
                milestones.append(
                    {
                        "enterprise_id": ident,
                        "code": code,
                        "status": "verified",
                        "evidence": {"reference": f"R-{i}"},
                        "value_pence": 500_000_000 if code == "employers_liability_insurance" else None,
                        "expires_at": expires,
                        "version": 2,
                        "updated_at": at,
                    }
                )
        async with database.transaction() as session:
            await session.execute(sa.insert(enterprises), rows)
            await session.execute(sa.insert(enterprise_cpv_codes), codes)
            await session.execute(sa.insert(enterprise_milestones), milestones)


# --- measuring -------------------------------------------------------------------------------


class PeakRss:
    """Samples this process's resident set size in a thread; ``peak_mb`` after ``stop()``."""

    def __init__(self, every: float = 0.02) -> None:
        self.every = every
        self.peak_kb = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current_kb() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._done.is_set():
            self.peak_kb = max(self.peak_kb, self.current_kb())
            time.sleep(self.every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, self.current_kb())

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


async def timed_alternating(
    ways: dict[str, Callable[[], Awaitable[Any]]], *, samples: int
) -> dict[str, float]:
    """Median seconds per call of each way; the ways take turns call by call, so a burst of
    load from other processes lands on all of them alike and the medians ignore it."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for way in ways.values():  # warm up
        for _ in range(5):
            await way()
    for _ in range(samples):
        for name, way in ways.items():
            started = time.perf_counter()
            await way()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


async def bench_listing(database: Database, app: Any, *, samples: int) -> list[str]:
    lines = []
    async with database.transaction(write=False) as session:
        deep = (
            await session.execute(
                sa.select(enterprises.c.created_at, enterprises.c.id)
                .order_by(enterprises.c.created_at, enterprises.c.id)
                .offset(
                    90_000
                    if await session.scalar(sa.select(sa.func.count()).select_from(enterprises)) > 90_000
                    else 0
                )
                .limit(1)
            )
        ).one()
    cursor = ENTERPRISE_ORDER.cursor_after(deep)
    cases = {
        "first page": (EnterpriseFilters(), None, {}),
        "page 1801 (keyset cursor)": (EnterpriseFilters(), (deep.created_at, deep.id), {"cursor": cursor}),
        "filtered: cpv=45, stage=incubating": (
            EnterpriseFilters(cpv="45", stage="incubating"),
            None,
            {"cpv": "45", "stage": "incubating"},
        ),
    }
    async with client(app, STAFF) as http:
        for label, (filters, after, params) in cases.items():
            statement = enterprise_list_query(filters, PAGE + 1, after)

            async def core(statement: Any = statement) -> None:
                async with database.engine.connect() as conn:
                    rows = (await conn.execute(statement)).all()
                assert len(rows) == PAGE + 1

            async def use_case(filters: EnterpriseFilters = filters, params: dict[str, str] = params) -> None:
                async with database.session(write=False) as session:
                    items, _ = await enterprise_service.list_enterprises(
                        session, filters, PAGE, params.get("cursor")
                    )
                assert len(items) == PAGE

            async def over_http(params: dict[str, str] = params) -> None:
                response = await http.get("/api/v1/enterprises", params={"limit": PAGE, **params})
                assert response.status_code == 200, response.text

            medians = await timed_alternating(
                {"core": core, "use case": use_case, "http": over_http}, samples=samples
            )
            base = medians["core"]
            lines.append(
                f"  {label:38s} core {base * 1e3:6.2f} ms | use case {medians['use case'] * 1e3:6.2f} ms "
                f"= {medians['use case'] / base:4.2f}x | HTTP {medians['http'] * 1e3:6.2f} ms "
                f"= {medians['http'] / base:4.2f}x"
            )
    return lines


async def bench_recompute(database: Database, count: int) -> list[str]:
    # The readiness first announced (not timed), then a catalogue change that touches everyone.
    started = time.perf_counter()
    first = await run_readiness_refresh(database, warning=WARNING)
    initial = time.perf_counter() - started
    async with database.transaction() as session:
        await catalogue.create_definition(
            session,
            MilestoneDefinitionCreate(
                code="bench_anti_bribery_policy",
                name="Anti-bribery policy",
                category="policy",
                description="A new core requirement for everyone.",
                applies_when={"always": True},
            ),
            Actor("staff", "bench"),
        )
    before_mb = PeakRss.current_kb() / 1024
    with PeakRss() as rss:
        started = time.perf_counter()
        recomputed, announced = await run_readiness_refresh(database, warning=WARNING)
        elapsed = time.perf_counter() - started
    assert recomputed == count and announced == count, (recomputed, announced)
    return [
        f"  first readiness of {first[0]:,} enterprises: {initial:5.1f} s ({first[0] / initial:,.0f}/s)",
        f"  after a catalogue change: {recomputed:,} recomputed, {announced:,} readiness.changed in "
        f"{elapsed:5.1f} s = {recomputed / elapsed:,.0f} enterprises/s",
        f"  resident memory: {before_mb:.0f} MB before, peak {rss.peak_mb:.0f} MB while recomputing "
        f"(target < 300 MB)",
    ]


async def bench_backend(name: str, url: str, nats_url: str, *, count: int, samples: int) -> None:
    print(f"\n{name}: {count:,} enterprises")
    await asyncio.to_thread(upgrade, SERVICE_DIR, url)
    database = Database(url, pool_size=5)
    try:
        started = time.perf_counter()
        await seed(database, count)
        async with database.engine.connect() as conn:  # what autovacuum or a DBA would do
            await conn.execute(sa.text("ANALYZE"))
            await conn.commit()
        print(f"  seeded and analyzed in {time.perf_counter() - started:.1f} s")
        settings = EnterprisesSettings(
            database_url=url,
            nats_url=nats_url,
            internal_secret=TEST_SECRET,
            environment="test",
            access_log=False,
            log_level="WARNING",
            run_jobs=False,
        )
        lines = await bench_recompute(database, count)
        app = create_app(settings)
        async with running(app):
            print("(a) one page of 50, median per page (ratio to the Core SELECT)")
            for line in await bench_listing(database, app, samples=samples):
                print(line)
        print("(b) readiness recompute")
        for line in lines:
            print(line)
    finally:
        await database.dispose()


async def postgres_database(admin_url: str) -> tuple[str, Callable[[], Awaitable[None]]] | None:
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"\nPostgreSQL skipped: {admin_url} does not answer ({exc!r})")
        return None
    name = f"seedbed_bench_enterprises_{uuid.uuid4().hex[:8]}"
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False), drop


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enterprises", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=300, help="timed calls of each way per case")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nats = NatsServer(Path(tmp) / "nats", port=NATS_PORT)
        nats.start()
        try:
            if not args.skip_sqlite:
                await bench_backend(
                    "SQLite",
                    f"sqlite+aiosqlite:///{tmp}/enterprises.db",
                    nats.url,
                    count=args.enterprises,
                    samples=args.samples,
                )
            created = await postgres_database(os.environ.get("SEEDBED_BENCH_POSTGRES_URL", DEFAULT_POSTGRES))
            if created is not None:
                url, drop = created
                try:
                    await bench_backend(
                        "PostgreSQL",
                        url,
                        nats.url,
                        count=args.enterprises,
                        samples=args.samples,
                    )
                finally:
                    await drop()
        finally:
            nats.stop()


if __name__ == "__main__":
    asyncio.run(main())
