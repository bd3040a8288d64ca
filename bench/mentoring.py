"""Mentoring figures (issue 5): slot search and booking, as ratios against baselines of the same run.

Against the same service, database and HTTP stack (principal check, request session, commit):
- slot search for one mentor over four weeks, and for 500 mentors over one week
  (``GET /slots?expertise=``), against a plain ``GET /mentors/{id}``;
- booking throughput (``POST /sessions`` with an Idempotency-Key: every rule checked, the
  session, its reminders, its event and the idempotency record written) against a bare
  single-row insert endpoint that this benchmark mounts on its own copy of the app.

    python -m bench.mentoring [--requests 600] [--bookings 1600] [--concurrency 8] [--rounds 10]

SQLite always; PostgreSQL too when SEEDBED_BENCH_POSTGRES_URL (or the default local server)
answers: a database is created for the run and dropped after it. Requests go to the app
in-process (httpx ASGI transport), so the figures are the service's own cost, not a network's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from services.mentoring import service
from services.mentoring.app import create_app
from services.mentoring.models import sessions
from services.mentoring.schemas import AvailabilityIn, MentorIn
from services.mentoring.settings import MentoringSettings
from shared.db import SessionDep, UtcDateTime, create_engine, new_metadata
from shared.migrations import upgrade
from shared.nats_server import port_open
from shared.testing.apps import STAFF, TEST_SECRET, client, running
from shared.testing.nats_server import NatsServer

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SERVICE_DIR = Path(__file__).resolve().parent.parent / "services" / "mentoring"
PORTS = range(18300, 18400)
LONDON = ZoneInfo("Europe/London")
NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)  # the app's clock: four weeks before the searched dates
MENTORS = 500

# The baseline's table: one row per request, in the same database as the sessions.
bench_metadata = new_metadata()
bench_rows = sa.Table(
    "bench_rows",
    bench_metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)


def mount_bare_insert(app: FastAPI) -> None:
    """``POST /bench/rows``: insert one row through the same session dependency, nothing else."""

    @app.post("/bench/rows", status_code=201)
    async def insert_row(db: SessionDep) -> dict[str, str]:
        row_id = uuid.uuid4()
        await db.execute(sa.insert(bench_rows).values(id=row_id, created_at=datetime.now(UTC)))
        return {"id": str(row_id)}


def free_port() -> int:
    for port in PORTS:
        if not port_open("127.0.0.1", port):
            return port
    raise RuntimeError("no free port in 18300-18399")


async def seed(app: FastAPI) -> list[str]:
    """500 mentors with insurance expertise and weekday hours; three booked sessions each in the
    searched week, so the slot search has something to step around."""
    database = app.state.database
    weekly = [{"weekday": day, "start": "09:00", "end": "17:00"} for day in range(5)]
    ids: list[str] = []
    for first in range(0, MENTORS, 100):
        async with database.transaction() as session:
            for n in range(first, first + 100):
                mentor = await service.register_mentor(
                    session,
                    MentorIn(
                        name=f"Mentor {n:03d}",
                        email=f"mentor{n}@example.org",
                        expertise=["insurance", "policy"] if n % 2 else ["insurance", "bidding"],
                        timezone="Europe/London",
                        session_lengths_minutes=[30, 60],
                        availability=AvailabilityIn.model_validate(
                            {"weekly": weekly, "minimum_notice_minutes": 0, "buffer_after_minutes": 10}
                        ),
                    ),
                    NOW,
                )
                ids.append(str(mentor.id))
                rows = []
                for day, hour in ((30, 10), (31, 13), (1, 15)):  # Tue 30, Wed 31 March, Thu 1 April
                    month = 3 if day > 1 else 4
                    start = datetime(2027, month, day, hour, tzinfo=LONDON).astimezone(UTC)
                    rows.append(
                        {
                            "id": uuid.uuid4(),
                            "mentor_id": mentor.id,
                            "enterprise_id": uuid.uuid4(),
                            "starts_at": start,
                            "ends_at": start + timedelta(hours=1),
                            "blocked_from": start,
                            "blocked_until": start + timedelta(minutes=70),
                            "timezone": "Europe/London",
                            "duration_minutes": 60,
                            "topic": "seeded",
                            "status": "booked",
                            "sequence": 0,
                            "booked_by_role": "staff",
                            "booked_by": "bench",
                            "scheduled_at": NOW,
                            "created_at": NOW,
                            "updated_at": NOW,
                        }
                    )
                await session.execute(sa.insert(sessions), rows)
    # The planner's statistics, as autovacuum would have gathered them by now on a live
    # PostgreSQL (this machine's server runs without it; a never-analyzed table is planned as a
    # scan of every session in the range).
    async with database.engine.begin() as conn:
        await conn.exec_driver_sql("ANALYZE")
    return ids


async def rate(
    count: int, concurrency: int, make: Callable[[int], Awaitable[httpx.Response]], expect: int
) -> tuple[float, float]:
    """Requests per second and median latency (ms) for ``count`` requests, ``concurrency`` at a time."""
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(n: int) -> None:
        async with semaphore:
            started = time.perf_counter()
            response = await make(n)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == expect, response.text

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    elapsed = time.perf_counter() - started
    return count / elapsed, statistics.median(latencies) * 1e3


Request = Callable[[int], Awaitable[httpx.Response]]


async def compare(
    baseline: Request,
    target: Request,
    count: int,
    concurrency: int,
    *,
    rounds: int,
    expect: tuple[int, int] = (200, 200),
    target_count: int | None = None,
    target_concurrency: int | None = None,
) -> tuple[float, float, list[float], list[float]]:
    """Baseline and target in alternating rounds (the machine is shared: its load drifts), so
    that each ratio compares neighbours; (baseline req/s, target req/s, ratio of each round,
    and of each round the ratio of this process's CPU time per request, baseline over target:
    what the throughput ratio would be if this process had a core to itself)."""
    per_round = max(1, count // rounds)
    target_per_round = max(1, (target_count or count) // rounds)
    base_rates, target_rates, ratios, cpu_ratios = [], [], [], []
    for r in range(rounds):
        cpu = time.process_time()
        base, _ = await rate(per_round, concurrency, lambda n, at=r * per_round: baseline(at + n), expect[0])
        base_cpu, cpu = (time.process_time() - cpu) / per_round, time.process_time()
        aimed, _ = await rate(
            target_per_round,
            target_concurrency or concurrency,
            lambda n, at=r * target_per_round: target(at + n),
            expect[1],
        )
        target_cpu = (time.process_time() - cpu) / target_per_round
        base_rates.append(base)
        target_rates.append(aimed)
        ratios.append(aimed / base)
        cpu_ratios.append(base_cpu / target_cpu)
    return statistics.median(base_rates), statistics.median(target_rates), ratios, cpu_ratios


def spread(ratios: list[float], digits: int = 2) -> str:
    return (
        f"{statistics.median(ratios):.{digits}f}x (rounds {min(ratios):.{digits}f}-{max(ratios):.{digits}f})"
    )


def booking_slots(mentor_ids: list[str], count: int) -> list[tuple[str, datetime]]:
    """Distinct free hours on Monday 29 March and Friday 2 April (no two requests collide, the
    mentors' ten-minute buffers and the seeded sessions included), spread over the mentors as
    many enterprises' bookings are: requests in flight together are for different mentors.
    (Taken mentor after mentor, four requests in flight would queue for one mentor's lock on
    PostgreSQL: that measures lock waits, not the cost of a booking.)"""
    slots = []
    for day in (datetime(2027, 3, 29), datetime(2027, 4, 2)):
        for hour in (9, 11, 13, 15):
            for mentor_id in mentor_ids:
                slots.append((mentor_id, day.replace(hour=hour, tzinfo=LONDON)))
                if len(slots) == count:
                    return slots
    raise ValueError("not enough mentors for that many bookings")


async def measure(
    name: str, url: str, nats_url: str, requests: int, bookings: int, concurrency: int, rounds: int
) -> None:
    await asyncio.to_thread(upgrade, SERVICE_DIR, url)
    engine = create_engine(url, pooled=False)
    async with engine.begin() as conn:
        await conn.run_sync(bench_metadata.create_all)
    await engine.dispose()
    settings = MentoringSettings(
        database_url=url,
        nats_url=nats_url,
        internal_secret=TEST_SECRET,
        environment="test",
        access_log=False,
        log_level="WARNING",
        reminder_interval_seconds=3600,
    )
    app = create_app(settings, clock=lambda: NOW)
    mount_bare_insert(app)
    async with running(app), client(app, STAFF) as http:
        started = time.perf_counter()
        mentor_ids = await seed(app)
        print(f"--- {name}: {MENTORS} mentors seeded in {time.perf_counter() - started:.1f}s")
        first = mentor_ids[0]
        one_mentor = {"start": "2027-03-29", "end": "2027-04-26", "duration_minutes": 60}
        many = {"expertise": "insurance", "start": "2027-03-29", "end": "2027-04-05", "duration_minutes": 60}
        check = await http.get(f"/api/v1/mentors/{first}/slots", params=one_mentor)
        four_weeks = len(check.json()["items"])
        check = await http.get("/api/v1/slots", params=many | {"limit": 500})
        assert check.status_code == 200, check.text

        async def get_mentor(n: int) -> httpx.Response:
            return await http.get(f"/api/v1/mentors/{mentor_ids[n % MENTORS]}")

        async def slots_one(n: int) -> httpx.Response:
            return await http.get(f"/api/v1/mentors/{mentor_ids[n % MENTORS]}/slots", params=one_mentor)

        async def slots_many(n: int) -> httpx.Response:
            return await http.get("/api/v1/slots", params=many)

        await rate(50, concurrency, get_mentor, 200)  # warm up
        base, one, ratios, _ = await compare(get_mentor, slots_one, requests, concurrency, rounds=rounds)
        print(f"{'GET /mentors/{id} (the slot baseline)':42s} {base:7.1f} req/s")
        label = f"slots: 1 mentor x 4 weeks ({four_weeks} slots)"
        print(f"{label:42s} {one:7.1f} req/s = {spread(ratios)} the baseline")
        base, multi, ratios, _ = await compare(
            get_mentor,
            slots_many,
            requests,
            concurrency,
            rounds=rounds,
            target_count=max(rounds, requests // 40),
            target_concurrency=2,
        )
        label = f"slots: {MENTORS} mentors x 1 week (first page)"
        print(f"{label:42s} {multi:7.1f} req/s = {spread(ratios, 3)} the baseline ({base:.0f} req/s)")

        async def bare_insert(n: int) -> httpx.Response:
            return await http.post("/bench/rows")

        warm_up = max(0, min(40, MENTORS * 8 - 2 * bookings))
        slots = booking_slots(mentor_ids, 2 * bookings + warm_up)

        def booking(first: int, keyed: bool) -> Request:
            async def book(n: int) -> httpx.Response:
                mentor_id, start = slots[first + n]
                return await http.post(
                    "/api/v1/sessions",
                    json={
                        "mentor_id": mentor_id,
                        "enterprise_id": str(uuid.uuid4()),
                        "start": start.isoformat(),
                        "duration_minutes": 60,
                        "topic": "Insurance cover for a catering lot",
                    },
                    headers={"Idempotency-Key": f"bench-{first + n}"} if keyed else {},
                )

            return book

        # Warm up both sides (statement compilation, connections) on slots of their own.
        await rate(50, concurrency, bare_insert, 201)
        if warm_up:
            await rate(warm_up, concurrency, booking(2 * bookings, True), 201)
        for label, first, keyed in (
            ("POST /sessions, Idempotency-Key", 0, True),
            ("POST /sessions, no key", bookings, False),
        ):
            base, booked, ratios, cpu_ratios = await compare(
                bare_insert, booking(first, keyed), bookings, concurrency, rounds=rounds, expect=(201, 201)
            )
            # Not a target: a figure to watch (below 0.25x, look for the cause).
            print(f"{label:42s} {booked:7.1f} req/s = {spread(ratios)} the bare insert ({base:.0f} req/s)")
            print(f"{'':42s} CPU time per request, bare insert / booking: {spread(cpu_ratios)}")
        async with app.state.database.transaction(write=False) as session:
            total = await session.scalar(sa.select(sa.func.count()).select_from(sessions))
        booked = rounds * max(1, bookings // rounds)  # compare() books per round, rounded down
        assert total == MENTORS * 3 + 2 * booked + warm_up, total


@contextlib.asynccontextmanager
async def databases(tmp: Path) -> AsyncIterator[list[tuple[str, str]]]:
    urls = [("sqlite", f"sqlite+aiosqlite:///{tmp / 'mentoring-bench.db'}")]
    admin = os.environ.get("SEEDBED_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    dsn = make_url(admin).set(drivername="postgresql").render_as_string(hide_password=False)
    created = None
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
        created = "seedbed_bench_mentoring_" + uuid.uuid4().hex[:8]
        await conn.execute(f'CREATE DATABASE "{created}"')
        await conn.close()
        urls.append(
            ("postgresql", make_url(admin).set(database=created).render_as_string(hide_password=False))
        )
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL skipped: {exc!r}")
    try:
        yield urls
    finally:
        if created:
            conn = await asyncpg.connect(dsn)
            await conn.execute(f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')
            await conn.close()


async def main(requests: int, bookings: int, concurrency: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = NatsServer(tmp / "nats", port=free_port())
        server.start()
        try:
            await server.wait_jetstream()
            print(
                f"requests={requests} bookings={bookings} concurrency={concurrency} rounds={rounds} "
                f"(in-process ASGI, nats-server {server.url})"
            )
            async with databases(tmp) as urls:
                for name, url in urls:
                    await measure(name, url, server.url, requests, bookings, concurrency, rounds)
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--bookings", type=int, default=1600)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.bookings, args.concurrency, args.rounds))
