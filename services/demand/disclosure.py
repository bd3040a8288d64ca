"""Statistical disclosure control of the aggregated pipeline over time (pure logic, no I/O).

The attacker is one anchor (it knows its own aggregate-only lines), knows every public
line, and has recorded every figure ever published, in every view, at every release.
Public lines give no cover, so for each published figure it knows the aggregate-only
part exactly (published minus public) and can difference any two of them.

So the aggregate-only (confidential) part is published only as whole *blocks* that
never re-form: a block is a fixed (CPV division, tender quarter). A view includes a
block's confidential figures only when it holds the whole block; every other view
leaves the confidential part out (flagged), never suppresses. A block's released
state, per anchor (lines, value), changes only at a release and only if:

- static rule: the new state is empty, or its aggregate-only lines come from at least
  ``k`` anchors, none holding more than the dominance share (and the p% rule if set);
- change rule: for *every* state of the block ever published, the per-anchor change
  from that state to the new one passes the same rule (on the absolute change of each
  anchor that changed): the difference of any two publications is itself a safe
  figure of at least ``k`` anchors, none dominant.

Otherwise the block keeps its previous released state (held back) until a later
release finds a safe move. Any linear combination of published block figures is a
combination of published states, so what differencing can isolate is one state or one
change between two states, each of which passed the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Contributions = dict[str, int]  # anchor id -> aggregate-only value in pence
State = Mapping[str, tuple[int, ...]]  # anchor id -> (lines, value, annualised value) in a block


@dataclass(frozen=True)
class Rules:
    """The disclosure rules: threshold ``min_anchors`` (k), dominance share, optional p% rule."""

    min_anchors: int = 3
    dominance_share: float = 0.8
    p_percent: float | None = None

    def is_safe(self, contributions: Mapping[str, int]) -> bool:
        """Whether a figure made of these per-anchor aggregate-only values may be published."""
        if len(contributions) < self.min_anchors:
            return False
        values = sorted(contributions.values(), reverse=True)
        total = sum(values)
        if total <= 0:
            return True
        if values[0] > self.dominance_share * total:
            return False
        if self.p_percent is not None:
            # The second largest anchor, subtracting its own value, must not learn the
            # largest one to within p%.
            rest = total - values[0] - values[1]
            if rest * 100 < self.p_percent * values[0]:
                return False
        return True


def change(before: State, after: State) -> dict[str, tuple[int, ...]]:
    """The absolute change of each figure of each anchor whose figures moved between two states."""
    moved: dict[str, tuple[int, ...]] = {}
    for anchor in set(before) | set(after):
        old = tuple(before.get(anchor, ()))
        new = tuple(after.get(anchor, ()))
        width = max(len(old), len(new))
        old, new = old + (0,) * (width - len(old)), new + (0,) * (width - len(new))
        if old != new:
            moved[anchor] = tuple(abs(b - a) for a, b in zip(old, new, strict=True))
    return moved


def _safe_figures(per_anchor: Mapping[str, tuple[int, ...]], rules: Rules) -> bool:
    """The rule on every money figure (all but the first, the count of lines) of a state or change."""
    width = max((len(figures) for figures in per_anchor.values()), default=0)
    return all(
        rules.is_safe(
            {anchor: figures[i] if i < len(figures) else 0 for anchor, figures in per_anchor.items()}
        )
        for i in range(1, max(width, 2))
    )


def may_release(live: State, published: Iterable[State], rules: Rules) -> bool:
    """Whether a block's released state may become ``live``, given every state of it ever
    published: the static rule on ``live`` (unless empty), and the change rule against each
    published state. A state maps each anchor to (lines, value, and any further money figures)."""
    live = {anchor: tuple(figures) for anchor, figures in live.items() if any(figures)}
    if live and not _safe_figures(live, rules):
        return False
    for earlier in published:
        moved = change(earlier, live)
        if moved and not _safe_figures(moved, rules):
            return False
    return True
