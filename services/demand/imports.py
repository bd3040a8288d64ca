"""Reading bulk import files as streams: CSV, JSON lines, OCDS release packages.

Each reader takes the request body as an async iterator of byte chunks and yields
``ImportRow``\\ s one at a time (row number, the fields as ``POST /demand`` names them,
and the errors already found while reading), so a file of any size is read in
constant memory.

CSV: a header row of ``POST /demand`` field names; list values separated by ``;``;
``requirements`` as ``code`` or ``code=min_value_pence`` separated by ``;``;
``delivery_area`` is the label, with ``delivery_area.postcode_areas`` and
``delivery_area.postcode_districts`` beside it; ``lots`` a JSON array. Rows are
numbered as a spreadsheet shows them (the header is row 1).
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from services.demand import ocds

CSV_COLUMNS: tuple[str, ...] = (
    "external_ref",
    "title",
    "description",
    "cpv_codes",
    "estimated_value_pence",
    "min_value_pence",
    "max_value_pence",
    "category",
    "procurement_method",
    "expected_tender_date",
    "contract_start",
    "duration_months",
    "suitable_for_sme",
    "suitable_for_vcse",
    "reprocurement",
    "status",
    "status_reason",
    "visibility",
    "requirements",
    "social_value_priorities",
    "delivery_area",
    "delivery_area.postcode_areas",
    "delivery_area.postcode_districts",
    "lots",
)
KNOWN_COLUMNS = frozenset({*CSV_COLUMNS, "anchor_id"})
REQUIRED_CSV_COLUMNS = ("external_ref", "title", "cpv_codes", "estimated_value_pence", "category")
LIST_COLUMNS = frozenset(
    {
        "cpv_codes",
        "social_value_priorities",
        "delivery_area.postcode_areas",
        "delivery_area.postcode_districts",
    }
)
CSV_EXAMPLE = {
    "external_ref": "LCC-2027-014",
    "title": "Community catering for day centres",
    "description": "Hot meals for four day centres, five days a week.",
    "cpv_codes": "55520000-1;55321000-6",
    "estimated_value_pence": "48000000",
    "min_value_pence": "40000000",
    "max_value_pence": "55000000",
    "category": "services",
    "procurement_method": "open",
    "expected_tender_date": "2027-02-01",
    "contract_start": "2027-06-01",
    "duration_months": "36",
    "suitable_for_sme": "true",
    "suitable_for_vcse": "true",
    "reprocurement": "false",
    "status": "planned",
    "status_reason": "",
    "visibility": "public",
    "requirements": "public_liability_insurance=500000000;health_safety_policy;safeguarding_policy",
    "social_value_priorities": "local_employment;healthy_food",
    "delivery_area": "Leeds",
    "delivery_area.postcode_areas": "LS",
    "delivery_area.postcode_districts": "",
    "lots": '[{"lot_id": "1", "title": "North centres", "estimated_value_pence": 24000000}]',
}

MEDIA_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/json": "ocds",
}


@dataclass
class ImportRow:
    row: int
    fields: dict[str, Any]
    errors: list[dict[str, str]] = field(default_factory=list)
    buyer: dict[str, Any] | None = None  # an OCDS release's buyer, which must be the importing anchor


class UnreadableFile(Exception):
    """The file cannot be read on (not UTF-8, not JSON where JSON is needed)."""

    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row
        self.message = message


async def _text(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The body as text, chunk by chunk; the event loop gets a turn between chunks, so a large
    file never holds it for longer than one chunk's work."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    consumed = 0
    async for chunk in chunks:
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise UnreadableFile(0, f"the file is not UTF-8 (byte {consumed + exc.start})") from exc
        consumed += len(chunk)
        if text:
            yield text
        await asyncio.sleep(0)
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise UnreadableFile(0, "the file ends inside a UTF-8 character") from exc
    if tail:
        yield tail


async def _records(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[str]]:
    """Whole CSV records (a quoted field may hold line breaks), a chunk's worth at a time.

    Each character is looked at once: the record read so far is kept as pieces, and the
    quote state carries over from one chunk to the next (inside quotes only the closing
    quote matters), so the work is linear in the file whatever its quoting.
    """
    pieces: list[str] = []
    quoted = False
    async for text in _text(chunks):
        records = []
        start = position = 0
        while True:
            if quoted:
                close = text.find('"', position)
                if close == -1:
                    break
                quoted = False
                position = close + 1
                continue
            newline = text.find("\n", position)
            quote = text.find('"', position, len(text) if newline == -1 else newline)
            if quote != -1:
                quoted = True
                position = quote + 1
                continue
            if newline == -1:
                break
            end = newline + 1
            if pieces:
                pieces.append(text[start:end])
                records.append("".join(pieces))
                pieces = []
            else:
                records.append(text[start:end])
            start = position = end
        if start < len(text):
            pieces.append(text[start:])
        if records:
            yield records
    rest = "".join(pieces)
    if rest.strip():
        yield [rest]


def _parse(records: list[str]) -> list[list[str] | csv.Error]:
    """Each record's values, or its error (a bad record does not spoil its neighbours)."""
    try:
        return list(csv.reader(records))
    except csv.Error:
        out: list[list[str] | csv.Error] = []
        for record in records:
            try:
                out.extend(csv.reader([record]))
            except csv.Error as exc:
                out.append(exc)
        return out


def _split_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(";") if part.strip()]


def _requirements(value: str) -> list[dict[str, str]]:
    parsed = []
    for part in value.split(";"):
        code, _, amount = part.strip().partition("=")
        if code.strip():
            parsed.append({"code": code.strip(), **({"min_value_pence": amount.strip()} if amount else {})})
    return parsed


def _lots(value: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        raise _CellError("lots", "must be a JSON array of lots") from None


class _CellError(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


def _reader(header: list[str]) -> Callable[[list[str]], tuple[dict[str, Any], list[dict[str, str]]]]:
    """How to read a row under this header: (position, field, where, how) per known column."""
    plan: list[tuple[int, str, str | None, Callable[[str], Any] | None]] = []
    for position, name in enumerate(header):
        if name not in KNOWN_COLUMNS:
            continue
        how: Callable[[str], Any] | None = (
            _split_list if name in LIST_COLUMNS else _requirements if name == "requirements" else
            _lots if name == "lots" else None
        )  # fmt: skip
        if name == "delivery_area":
            plan.append((position, "label", "delivery_area", how))
        elif name.startswith("delivery_area."):
            plan.append((position, name.split(".", 1)[1], "delivery_area", how))
        else:
            plan.append((position, name, None, how))

    def read(values: list[str]) -> tuple[dict[str, Any], list[dict[str, str]]]:
        raw: dict[str, Any] = {}
        errors: list[dict[str, str]] = []
        area: dict[str, Any] = {}
        count = len(values)
        for position, name, where, how in plan:
            if position >= count:
                break
            value = values[position].strip()
            if not value:
                continue
            if how is not None:
                try:
                    value = how(value)
                except _CellError as exc:
                    errors.append({"field": exc.field, "message": exc.message})
                    continue
            if where is None:
                raw[name] = value
            else:
                area[name] = value
        if area:
            raw["delivery_area"] = area
        return raw, errors

    return read


async def csv_rows(chunks: AsyncIterator[bytes]) -> AsyncIterator[ImportRow]:
    header: list[str] | None = None
    row = 0
    async for records in _records(chunks):
        for values in _parse(records):
            row += 1
            if isinstance(values, csv.Error):
                if header is None:
                    raise UnreadableFile(row, f"the header row is not CSV: {values}")
                yield ImportRow(row, {}, [{"field": "row", "message": f"not a CSV row: {values}"}])
                continue
            if header is None:
                header = [name.strip() for name in values]
                read = _reader(header)
                problems = [
                    {"field": name, "message": "unknown column; see GET /demand/imports/template.csv"}
                    for name in header
                    if name not in CSV_COLUMNS and name != "anchor_id"
                ]
                problems += [
                    {"field": name, "message": "required column missing"}
                    for name in REQUIRED_CSV_COLUMNS
                    if name not in header
                ]
                if len(set(header)) != len(header):
                    problems.append({"field": "header", "message": "a column is named twice"})
                if problems:
                    yield ImportRow(row, {}, problems)
                continue
            if not any(v.strip() for v in values):
                continue  # a blank line
            if len(values) > len(header):
                message = f"{len(values)} values for {len(header)} columns"
                yield ImportRow(row, {}, [{"field": "row", "message": message}])
                continue
            fields, errors = read(values)
            yield ImportRow(row, fields, errors)
    if header is None:
        raise UnreadableFile(1, "the file is empty: it needs a header row")


async def ndjson_rows(chunks: AsyncIterator[bytes]) -> AsyncIterator[ImportRow]:
    pieces: list[str] = []  # the line read so far (kept as pieces: a line may be long)
    row = 0

    def parse(line: str, number: int) -> ImportRow | None:
        if not line.strip():
            return None
        try:
            value = json.loads(line)
        except ValueError as exc:
            return ImportRow(number, {}, [{"field": "row", "message": f"not JSON: {exc.args[0]}"}])
        except RecursionError:
            return ImportRow(number, {}, [{"field": "row", "message": "JSON nested too deeply"}])
        if not isinstance(value, dict):
            return ImportRow(number, {}, [{"field": "row", "message": "each line must be a JSON object"}])
        return ImportRow(number, value)

    async for text in _text(chunks):
        lines = text.split("\n")
        pieces.append(lines.pop())
        if not lines:
            continue
        lines[0] = "".join(pieces[:-1]) + lines[0]
        pieces = pieces[-1:]
        for line in lines:
            row += 1
            found = parse(line, row)
            if found is not None:
                yield found
    pending = "".join(pieces)
    if pending:
        row += 1
        found = parse(pending, row)
        if found is not None:
            yield found


class _JsonStream:
    """A window on a streamed JSON text, decoding one value at a time with ``raw_decode``."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._texts = _text(chunks).__aiter__()
        self.buffer = ""
        self.position = 0
        self.done = False
        self.decoder = json.JSONDecoder()

    async def more(self) -> bool:
        if self.done:
            return False
        try:
            text = await self._texts.__anext__()
        except StopAsyncIteration:
            self.done = True
            return False
        self.buffer = self.buffer[self.position :] + text
        self.position = 0
        return True

    async def skip_space(self) -> str | None:
        """The next significant character (not consumed), or None at the end."""
        while True:
            while self.position < len(self.buffer) and self.buffer[self.position] in " \t\r\n":
                self.position += 1
            if self.position < len(self.buffer):
                return self.buffer[self.position]
            if not await self.more():
                return None

    async def expect(self, char: str) -> None:
        found = await self.skip_space()
        if found != char:
            raise UnreadableFile(0, f"expected {char!r} in the OCDS package, found {found!r}")
        self.position += 1

    async def value(self) -> Any:
        await self.skip_space()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as exc:
                if await self.more():
                    continue
                raise UnreadableFile(0, f"the OCDS package is not valid JSON: {exc.msg}") from exc
            except RecursionError:
                raise UnreadableFile(0, "the OCDS package is nested too deeply") from None
            # A number at the end of the window may go on in the next chunk.
            if end == len(self.buffer) and isinstance(value, int | float) and await self.more():
                continue
            self.position = end
            return value


async def ocds_rows(chunks: AsyncIterator[bytes]) -> AsyncIterator[ImportRow]:
    """The releases of an OCDS release package, read one at a time."""
    stream = _JsonStream(chunks)
    await stream.expect("{")
    seen_releases = False
    while True:
        char = await stream.skip_space()
        if char == "}":
            break
        if char == ",":
            stream.position += 1
            continue
        key = await stream.value()
        if not isinstance(key, str):
            raise UnreadableFile(0, "the OCDS package is not a JSON object")
        await stream.expect(":")
        if key != "releases":
            await stream.value()  # package metadata: uri, publisher, version...
            continue
        seen_releases = True
        await stream.expect("[")
        number = 0
        while True:
            char = await stream.skip_space()
            if char == "]":
                stream.position += 1
                break
            if char == ",":
                stream.position += 1
                continue
            if char is None:
                raise UnreadableFile(number, "the OCDS package ends inside its releases")
            release = await stream.value()
            number += 1
            fields, errors = ocds.line_from_release(release)
            yield ImportRow(number, fields, errors, buyer=fields.pop(ocds.BUYER_KEY, None))
    if not seen_releases:
        raise UnreadableFile(0, "an OCDS release package needs a releases array")


def template_csv(with_example: bool) -> str:
    """The CSV template: the header row, and an example row when asked for."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    if with_example:
        writer.writerow([CSV_EXAMPLE[name] for name in CSV_COLUMNS])
    return out.getvalue()
