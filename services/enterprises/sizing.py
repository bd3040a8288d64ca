"""Company size class from the Companies Act 2006 thresholds in force from 6 April 2025.

A company is of a size when it meets two of three conditions (turnover, balance
sheet total, employees). We hold two of the facts (employees and turnover) and
never the balance sheet, so an enterprise takes the smallest class whose limits
every fact we know is within: with both facts known that is exactly "two of
three met"; with one known, that one decides; with none, ``micro``.
"""

from __future__ import annotations

from typing import Final

from services.enterprises.vocabulary import SizeClass

SIZE_CLASSES: Final[tuple[SizeClass, ...]] = ("micro", "small", "medium", "large")

# (class, max employees, max turnover in pence): "not more than" each limit.
THRESHOLDS: Final[tuple[tuple[SizeClass, int, int], ...]] = (
    ("micro", 10, 100_000_000),  # 1m GBP
    ("small", 50, 1_500_000_000),  # 15m GBP
    ("medium", 250, 5_400_000_000),  # 54m GBP
)


def size_class(employees: int | None, turnover_pence: int | None) -> SizeClass:
    """The smallest class whose limits every known fact is within; ``large`` beyond medium."""
    for name, max_employees, max_turnover in THRESHOLDS:
        if employees is not None and employees > max_employees:
            continue
        if turnover_pence is not None and turnover_pence > max_turnover:
            continue
        return name
    return "large"
