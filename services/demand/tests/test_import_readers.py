"""The import readers take the body in chunks cut anywhere and read the same rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.demand import imports

CSV = (
    "external_ref,title,description,cpv_codes,estimated_value_pence,category\r\n"
    'A-1,Caf\u00e9 meals,"Two lines\r\nof text, with ""quotes""",55520000;55521200,100,services\r\n'
    "\r\n"
    "A-2,Cleaning \u2014 hubs,,90910000,200,services\r\n"
    'A-3,"Last, unterminated",x,90910000,300,services'
)
NDJSON = '{"external_ref": "N-1", "title": "\u00e9t\u00e9"}\n\n{"external_ref": "N-2"}\nnot json\n[1]'
OCDS = json.dumps(
    {
        "uri": "https://example.org/p",
        "publisher": {"name": "P \u00e9"},
        "version": "1.1",
        "releases": [
            {"ocid": "o-1", "tag": ["planning"], "tender": {"title": "One", "value": {"amount": 12.5}}},
            {"ocid": "o-2", "tag": ["planning"], "tender": {"title": "Two", "value": {"amount": 1e3}}},
        ],
        "publishedDate": "2026-01-01T00:00:00Z",
    }
)


async def chunked(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    previous = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        yield data[previous:cut]
        previous = cut
    yield data[previous:]


async def read(reader, data: bytes, cuts: list[int]) -> list[tuple[int, dict, list]]:
    return [(r.row, r.fields, r.errors) async for r in reader(chunked(data, cuts))]


async def test_csv_rows_keep_quoted_line_breaks_and_spreadsheet_row_numbers() -> None:
    rows = await read(imports.csv_rows, CSV.encode(), [])
    assert [r[0] for r in rows] == [2, 4, 5]
    assert rows[0][1]["description"] == 'Two lines\r\nof text, with "quotes"'
    assert rows[0][1]["cpv_codes"] == ["55520000", "55521200"]
    assert rows[2][1]["title"] == "Last, unterminated"


cut_points = st.lists(st.integers(0, 400), max_size=12)


@settings(max_examples=60, deadline=None)
@given(cut_points)
async def test_csv_reads_the_same_however_the_body_is_cut(cuts: list[int]) -> None:
    data = CSV.encode()
    assert await read(imports.csv_rows, data, cuts) == await read(imports.csv_rows, data, [])


@settings(max_examples=60, deadline=None)
@given(cut_points)
async def test_json_lines_read_the_same_however_the_body_is_cut(cuts: list[int]) -> None:
    data = NDJSON.encode()
    rows = await read(imports.ndjson_rows, data, cuts)
    assert rows == await read(imports.ndjson_rows, data, [])
    assert [(r[0], bool(r[2])) for r in rows] == [(1, False), (3, False), (4, True), (5, True)]


@settings(max_examples=60, deadline=None)
@given(cut_points)
async def test_ocds_package_reads_the_same_however_the_body_is_cut(cuts: list[int]) -> None:
    data = OCDS.encode()
    rows = await read(imports.ocds_rows, data, cuts)
    assert rows == await read(imports.ocds_rows, data, [])
    assert [(r[0], r[1]["external_ref"], r[1]["estimated_value_pence"]) for r in rows] == [
        (1, "o-1", 1250),
        (2, "o-2", 100_000),
    ]


async def test_text_that_is_not_utf8_is_unreadable() -> None:
    with pytest.raises(imports.UnreadableFile):
        await read(imports.csv_rows, "title\r\ncaf\u00e9\r\n".encode("latin-1"), [])


async def test_the_reader_does_not_wait_for_the_whole_body() -> None:
    """The first row comes out before the rest of the body is even produced."""
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        yield b"external_ref,title,cpv_codes,estimated_value_pence,category\n"
        while True:
            produced += 1
            yield f"R-{produced},T,55520000,1,services\n".encode()

    reader = imports.csv_rows(endless())
    first = await reader.__anext__()
    assert first.fields["external_ref"] == "R-1" and produced < 5
    await reader.aclose()


def crafted_csv(size: int) -> bytes:
    """A header, an opening quote that never closes, then ``a`` lines up to ``size`` bytes."""
    head = b'external_ref,title\n"'
    return head + b"a\n" * ((size - len(head)) // 2)


async def in_chunks(data: bytes, size: int = 65_536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_field_that_never_closes_is_one_row_error_not_the_rest_of_the_file() -> None:
    """32 MB after an opening quote that never closes: the reader keeps going chunk by chunk and
    answers one error for that row. (That its work grows only with the file is measured by
    ``python -m bench.imports``: a speed target, not a test's.)"""
    rows = [row async for row in imports.csv_rows(in_chunks(crafted_csv(32 << 20)))]
    assert [row.row for row in rows] == [1, 2]
    assert rows[1].errors == [
        {"field": "row", "message": "not a CSV row: field larger than field limit (131072)"}
    ]


async def test_csv_parsing_gives_the_event_loop_a_turn_for_every_chunk() -> None:
    turns = 0
    parsing = True

    async def other_requests() -> None:
        nonlocal turns
        while parsing:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_requests())
    data = crafted_csv(4 << 20)
    async for _ in imports.csv_rows(in_chunks(data)):
        pass
    parsing = False
    await ticker
    assert turns >= len(data) // 65_536


async def test_one_long_json_line_is_one_row() -> None:
    line = {"title": "a" * (8 << 20)}
    rows = [row async for row in imports.ndjson_rows(in_chunks(json.dumps(line).encode()))]
    assert [(row.row, row.fields, row.errors) for row in rows] == [(1, line, [])]
