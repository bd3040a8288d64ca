"""The CPV hierarchy as the pipeline and matching use it; well-formedness is ``shared.cpv``."""

from __future__ import annotations

from shared.cpv import DIVISIONS, base, cpv_error, division, group

__all__ = [
    "DIVISIONS",
    "base",
    "common_prefix_length",
    "cpv_error",
    "division",
    "group",
    "prefix_upper_bound",
    "significant",
]


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
