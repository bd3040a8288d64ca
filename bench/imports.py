"""The demand import readers on crafted input: their cost grows with the file, never faster.

A client controls the body of ``POST /api/v1/demand/imports``; a reader that went over what it
had read again for every chunk would let one crafted file hold a worker for minutes. Two
figures, each a ratio against a baseline measured in the same run (CPU time of this process):

- CSV: a header, then an opening quote that never closes and 32 MB of ``a`` lines (one field
  that never ends);
- NDJSON: one line of 32 MB (a JSON object with one long string).

For each, the median CPU time the reader spends on one of its last 64 chunks of 64 KiB, against
one of its early chunks (8-71) of the same parse, median of rounds. Target: at most 4x (a
reader linear in the file stays near 1x; one that goes over what it has read again for every
chunk grows with the file).

    python -m bench.imports [--megabytes 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Callable
from statistics import median

from services.demand import imports

CHUNK = 65_536


def crafted_csv(size: int) -> bytes:
    """A header, an opening quote that never closes, then ``a`` lines up to ``size`` bytes."""
    head = b'external_ref,title\n"'
    return head + b"a\n" * ((size - len(head)) // 2)


async def in_chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


async def seconds_per_chunk(
    reader: Callable[[AsyncIterator[bytes]], AsyncIterator[imports.ImportRow]], data: bytes
) -> list[float]:
    """CPU time the reader spent on each chunk (between being handed it and asking for the next)."""
    spent: list[float] = []

    async def timed() -> AsyncIterator[bytes]:
        async for chunk in in_chunks(data):
            handed = time.process_time()
            yield chunk
            spent.append(time.process_time() - handed)

    async for _ in reader(timed()):
        pass
    return spent


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


async def main(args: argparse.Namespace) -> None:
    size = args.megabytes << 20
    files = {
        "CSV": (imports.csv_rows, crafted_csv(size)),
        "NDJSON": (imports.ndjson_rows, b'{"title": "' + b"a" * size + b'"}'),
    }
    summary = []
    for name, (reader, data) in files.items():
        ratios = []
        for n in range(args.rounds):
            spent = await seconds_per_chunk(reader, data)
            early, last = median(spent[8:72]), median(spent[-64:])
            ratios.append(last / early)
            print(
                f"{name} round {n + 1}: {len(spent)} chunks, early {early * 1e6:.1f} us, "
                f"last {last * 1e6:.1f} us per chunk: {last / early:.2f}x"
            )
        ratio = median(ratios)
        summary.append(f"  {name:<6} last chunks / early chunks {ratio:.2f}x ({verdict(ratio <= 4)})")
    print("\nsummary", *summary, sep="\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
