"""CSV a spreadsheet opens safely, for every download (the pages', the impact report).

Anchors' text is stored verbatim, so a title may begin with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return, which a spreadsheet would run as a formula (CSV injection). Following
the OWASP advice, every text cell that would start with one of those (after any leading
spaces) is prefixed with a single quote, and every cell is quoted, so a separator or a quote
inside a cell cannot start a new one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value: Any) -> Any:
    """A cell a spreadsheet shows as text: numbers as they are, text never as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return value
    text = str(value)
    if text.lstrip(" ").startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow([neutralised(h) for h in header])
    for row in rows:
        writer.writerow([neutralised(v) for v in row])
    return buffer.getvalue()
