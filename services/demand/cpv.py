"""The Common Procurement Vocabulary (CPV 2008): well-formed codes and their hierarchy.

A code is eight digits with an optional check digit (``55510000`` or ``55510000-8``).
Division = the first two digits, group = three, class = four, category = five; a
code ending in zeros names the whole branch above it (``55500000`` is group 555).
"""

from __future__ import annotations

import re

DIVISIONS: frozenset[str] = frozenset(
    {
        "03", "09", "14", "15", "16", "18", "19", "22", "24", "30", "31", "32", "33", "34", "35",
        "37", "38", "39", "41", "42", "43", "44", "45", "48", "50", "51", "55", "60", "63", "64",
        "65", "66", "70", "71", "72", "73", "75", "76", "77", "79", "80", "85", "90", "92", "98",
    }
)  # fmt: skip

CPV_PATTERN = re.compile(r"^\d{8}(-\d)?$")
PREFIX_PATTERN = re.compile(r"^\d{2,8}$")


def cpv_error(code: object) -> str | None:
    """Why ``code`` is not a CPV code, or None when it is one."""
    if not isinstance(code, str) or not CPV_PATTERN.match(code):
        return f"{code!r} is not a CPV code: use 8 digits with an optional check digit, e.g. 55510000-8"
    if code[:2] not in DIVISIONS:
        return f"{code!r} has no known CPV division ({code[:2]})"
    return None


def base(code: str) -> str:
    """The eight digits, without the check digit."""
    return code[:8]


def division(code: str) -> str:
    return code[:2]


def group(code: str) -> str:
    return code[:3]


def significant(code: str) -> str:
    """The prefix that the code names: ``55500000`` -> ``555``; never shorter than the division."""
    digits = base(code).rstrip("0")
    return digits if len(digits) >= 2 else base(code)[:2]


def common_prefix_length(a: str, b: str) -> int:
    n = 0
    for x, y in zip(base(a), base(b), strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string above every code starting with ``prefix`` (``':'`` sorts after digits)."""
    return prefix + ":"
