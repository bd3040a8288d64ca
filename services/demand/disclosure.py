"""Statistical disclosure control of the aggregated pipeline (pure logic, no I/O).

The attacker knows every public line and every figure ever published for the
current snapshot, in any view (any ``group_by``, any filter), and can add and
subtract them. Public lines give no cover, so what must be protected is the
aggregate-only part of each figure, and the attacker knows that part exactly
for every published figure (published minus public).

The rule used here makes every such part a sum of whole *protection blocks*:

- the fine cells (atoms: the most detailed key any view can ask for) that hold
  aggregate-only lines are partitioned into blocks, once per snapshot, for every
  view alike; each block is *safe*: its aggregate-only lines come from at least
  ``k`` distinct anchors and no anchor holds more than the dominance share of
  their value (and, if set, the p% rule holds);
- a view publishes a figure (a cell, or the totals) only when it contains whole
  blocks: a block split between two cells of the view, or cut by the view's
  filter, suppresses every cell it touches (and the totals, when the filter cuts
  it); a block that cannot be made safe at all suppresses every figure it is in.

So every published aggregate-only part, in every view, is a sum of whole blocks;
any combination of published figures across any views is a linear combination
of block totals, and the finest thing an attacker can recover is one block:
at least ``k`` anchors, none dominant. No suppressed figure is recoverable and
no value narrows to a single anchor.

Blocks are formed bottom-up along a hierarchy of the dimensions: an atom that
is safe alone is its own block; the unsafe rest of a branch is pooled, and
merged with the branch's smallest safe blocks when the pool alone is not safe,
or passed up to the next coarser branch. Dimensions dropped early (SME and VCSE
suitability, contract-start quarter) are the ones whose views lose most to
suppression; the division, tender quarter and anchor type are kept longest.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Atom = tuple[Hashable, ...]
Contributions = dict[str, int]  # anchor id -> aggregate-only value in pence


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


@dataclass
class _Unit:
    atoms: list[Atom]
    contributions: Contributions = field(default_factory=dict)

    @property
    def value(self) -> int:
        return sum(self.contributions.values())

    def absorb(self, other: _Unit) -> None:
        self.atoms.extend(other.atoms)
        for anchor, value in other.contributions.items():
            self.contributions[anchor] = self.contributions.get(anchor, 0) + value


@dataclass(frozen=True)
class Block:
    block_id: int
    publishable: bool
    atoms: tuple[Atom, ...]


def _merge_into_safe(residual: _Unit, blocks: list[_Unit], rules: Rules) -> tuple[list[_Unit], _Unit | None]:
    """Make an unsafe pool safe by merging safe blocks into it (the smallest that suffices, else
    the largest, repeatedly). Returns the new block list and the pool when it stays unsafe."""
    remaining = sorted(blocks, key=lambda b: b.value)  # stable: ties keep their (fixed) order
    while remaining:
        chosen = None
        for candidate in remaining:  # smallest first: disturb as little as possible
            trial = dict(residual.contributions)
            for anchor, value in candidate.contributions.items():
                trial[anchor] = trial.get(anchor, 0) + value
            if rules.is_safe(trial):
                chosen = candidate
                break
        if chosen is None:
            chosen = remaining[-1]  # the largest dilutes a dominant anchor the most
        remaining.remove(chosen)
        residual.absorb(chosen)
        if rules.is_safe(residual.contributions):
            return [*remaining, residual], None
    return [], residual


def build_blocks(
    atoms: Mapping[Atom, Mapping[str, int]],
    rules: Rules,
    levels: Sequence[Callable[[Atom], Hashable]],
) -> list[Block]:
    """Partition the atoms holding aggregate-only lines into protection blocks.

    ``atoms`` maps each atom to its per-anchor aggregate-only values; ``levels`` are
    ever coarser keys of an atom, the last one the same for every atom (the root).
    """
    # The work allocates many small objects and makes no reference cycles: collecting
    # garbage meanwhile would only walk them again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _build_blocks(atoms, rules, levels)
    finally:
        if collecting:
            gc.enable()


def _build_blocks(
    atoms: Mapping[Atom, Mapping[str, int]],
    rules: Rules,
    levels: Sequence[Callable[[Atom], Hashable]],
) -> list[Block]:
    # Level 0: every atom on its own. Dicts keep insertion order, so one sort makes it all
    # deterministic.
    nodes: dict[Hashable, tuple[list[_Unit], _Unit | None]] = {}
    for atom in _ordered(atoms):
        unit = _Unit([atom], dict(atoms[atom]))
        safe = rules.is_safe(unit.contributions)
        nodes[atom] = ([unit], None) if safe else ([], unit)
    keys: dict[Hashable, Atom] = {atom: atom for atom in nodes}  # node key -> a representative atom

    for level in levels:
        grouped: dict[Hashable, tuple[list[_Unit], list[_Unit]]] = {}
        representative: dict[Hashable, Atom] = {}
        for node_key, (blocks, residual) in nodes.items():
            atom = keys[node_key]
            parent = level(atom)
            entry = grouped.get(parent)
            if entry is None:
                entry = grouped[parent] = ([], [])
                representative[parent] = atom
            if blocks:
                entry[0].extend(blocks)
            if residual is not None:
                entry[1].append(residual)
        nodes = {}
        for parent, (blocks, residuals) in grouped.items():
            pool: _Unit | None = None
            for residual in residuals:
                if pool is None:
                    pool = residual  # the child node is gone: its pool can grow in place
                else:
                    pool.absorb(residual)
            if pool is not None and rules.is_safe(pool.contributions):
                blocks.append(pool)
                pool = None
            elif pool is not None and blocks:
                blocks, pool = _merge_into_safe(pool, blocks, rules)
            nodes[parent] = (blocks, pool)
        keys = representative

    safe_units: list[_Unit] = []
    unsafe_units: list[_Unit] = []
    for blocks, residual in nodes.values():
        safe_units.extend(blocks)
        if residual is not None:
            unsafe_units.append(residual)
    units = [(True, tuple(_ordered(u.atoms))) for u in safe_units]
    units += [(False, tuple(_ordered(u.atoms))) for u in unsafe_units]
    first = _ordered([atoms_[0] for _, atoms_ in units])
    rank = {atom: i for i, atom in enumerate(first)}
    units.sort(key=lambda pair: rank[pair[1][0]])
    return [
        Block(block_id=i, publishable=ok, atoms=members) for i, (ok, members) in enumerate(units, start=1)
    ]


def _ordered(items: Iterable[Atom]) -> list[Atom]:
    """Atoms in a fixed order (as tuples; by their text when their values do not compare)."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)


@dataclass
class BlockPlacement:
    """Where one block falls in one view: the view cells it touches inside the filter, and
    whether some of it lies outside the filter."""

    publishable: bool
    inside: set[Hashable] = field(default_factory=set)
    outside: bool = False


def suppressed_figures(placements: Iterable[BlockPlacement]) -> tuple[set[Hashable], bool]:
    """The view cells to suppress, and whether the view's totals must be suppressed."""
    cells: set[Hashable] = set()
    totals = False
    for placement in placements:
        if not placement.inside:
            continue  # wholly filtered out: it is in no figure of this view
        cut_by_filter = placement.outside
        if not placement.publishable or cut_by_filter or len(placement.inside) > 1:
            cells |= placement.inside
        if not placement.publishable or cut_by_filter:
            totals = True
    return cells, totals
