"""Rate-limit check figures (issue 15): the cost of one check with the counters in this process
(``local``, the embedded default) and in a JetStream KeyValue bucket on a bundled nats-server on
loopback (``nats``, shared by gateway replicas), sequential and with concurrent callers, plus
the contended case where every caller hits one key (compare-and-set retries).

Prints microseconds per check, median of rounds, and the shared store's cost as a ratio of the
local one measured in the same run.

    python -m bench.limits [--checks 2000] [--rounds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from statistics import median

from gateway.limits import RateLimiter, SharedRateLimiter
from shared.nats import NatsLink
from shared.testing.nats_server import NatsServer


async def per_check(
    limiter: RateLimiter | SharedRateLimiter, checks: int, concurrency: int, keys: int
) -> float:
    """Microseconds per check with ``concurrency`` callers over ``keys`` distinct keys."""
    each = checks // concurrency

    async def caller(n: int) -> None:
        for i in range(each):
            await limiter.admit(f"key:{(n * each + i) % keys}", 1_000_000)

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(concurrency)))
    return (time.perf_counter() - started) / (each * concurrency) * 1e6


async def main(checks: int, rounds: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        link = NatsLink(server.url, name="bench-limits")
        await link.start()
        try:
            assert await link.wait_ready(10)
            local = RateLimiter()
            shared = SharedRateLimiter(link)
            await shared.admit("warm-up", 10)
            cases = [
                ("sequential, distinct keys", 1, checks),
                (f"{concurrency} callers, distinct keys", concurrency, checks),
                (f"{concurrency} callers, one key", concurrency, 1),
            ]
            print(f"{checks} checks per round, {rounds} rounds, nats-server {server.url}")
            print(f"{'case':<32} {'local us':>9} {'nats us':>9} {'ratio':>7}")
            for name, callers, keys in cases:
                local_us = median([await per_check(local, checks, callers, keys) for _ in range(rounds)])
                nats_us = median([await per_check(shared, checks, callers, keys) for _ in range(rounds)])
                print(f"{name:<32} {local_us:>9.1f} {nats_us:>9.1f} {nats_us / local_us:>6.0f}x")
            print(f"checks counted locally because NATS did not answer: {shared.fallbacks_total}")
        finally:
            await link.close()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.checks, args.rounds, args.concurrency))
