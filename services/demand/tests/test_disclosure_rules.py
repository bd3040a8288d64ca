"""Protection blocks (pure logic): every block is safe, together they cover every atom once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.demand.disclosure import BlockPlacement, Rules, build_blocks, suppressed_figures
from services.demand.pipeline.cells import PROTECTION_LEVELS, protection_blocks

RULES = Rules(min_anchors=3, dominance_share=0.8)


def atom(group: str = "555", quarter: str = "2027-Q1", band: str = "0-30k", area: str = "LS") -> tuple:
    return ("local_authority", group, quarter, quarter, band, True, True, area)


def test_threshold_needs_k_distinct_anchors() -> None:
    assert not RULES.is_safe({"a": 10, "b": 10})
    assert RULES.is_safe({"a": 10, "b": 10, "c": 10})


def test_dominance_refuses_an_anchor_over_the_share() -> None:
    assert not RULES.is_safe({"a": 81, "b": 10, "c": 9})
    assert RULES.is_safe({"a": 80, "b": 10, "c": 10})
    assert RULES.is_safe({"a": 0, "b": 0, "c": 0})  # nothing to dominate


def test_p_percent_rule_when_set() -> None:
    strict = Rules(min_anchors=3, dominance_share=1.0, p_percent=10)
    assert not strict.is_safe({"a": 100, "b": 50, "c": 5})  # the rest (5) is under 10% of 100
    assert strict.is_safe({"a": 100, "b": 50, "c": 10})


def test_safe_atom_is_its_own_block_and_an_unsafe_one_joins_a_neighbour() -> None:
    safe = atom(band="0-30k")
    lonely = atom(band="30k-100k")
    blocks = build_blocks({safe: {"a": 5, "b": 5, "c": 5}, lonely: {"d": 3}}, RULES, PROTECTION_LEVELS)
    assert len(blocks) == 1 and blocks[0].publishable
    assert set(blocks[0].atoms) == {safe, lonely}


def test_unsafe_atoms_pool_together_before_touching_safe_blocks() -> None:
    safe = atom(group="451", quarter="2027-Q1")
    pooled = [atom(band=b) for b in ("0-30k", "30k-100k", "100k-250k")]
    contributions = {safe: {"a": 5, "b": 5, "c": 5}} | {a: {n: 4} for a, n in zip(pooled, "xyz", strict=True)}
    blocks = build_blocks(contributions, RULES, PROTECTION_LEVELS)
    assert sorted(len(b.atoms) for b in blocks) == [1, 3]
    assert all(b.publishable for b in blocks)


def test_everything_is_unpublishable_when_even_the_whole_is_unsafe() -> None:
    blocks = build_blocks(
        {atom(group="451"): {"a": 5}, atom(group="555"): {"b": 5}}, RULES, PROTECTION_LEVELS
    )
    assert len(blocks) == 1 and not blocks[0].publishable


anchors = st.sampled_from("abcdefg")
atoms = st.builds(
    atom,
    group=st.sampled_from(["451", "452", "555", "556", "791"]),
    quarter=st.sampled_from(["2027-Q1", "2027-Q2", "2027-Q3"]),
    band=st.sampled_from(["0-30k", "30k-100k", "1m-5m"]),
    area=st.sampled_from(["LS", "BD", "anywhere"]),
)
tables = st.dictionaries(
    atoms, st.dictionaries(anchors, st.integers(0, 10_000), min_size=1, max_size=4), max_size=25
)


@settings(max_examples=200, deadline=None)
@given(tables, st.integers(2, 4), st.sampled_from([0.5, 0.8, 1.0]))
def test_blocks_partition_the_atoms_and_each_publishable_block_is_safe(table, k, share) -> None:
    rules = Rules(min_anchors=k, dominance_share=share)
    blocks = build_blocks(table, rules, PROTECTION_LEVELS)
    covered = [a for b in blocks for a in b.atoms]
    assert sorted(covered, key=repr) == sorted(table, key=repr)
    for block in blocks:
        merged: dict[str, int] = {}
        for a in block.atoms:
            for anchor, value in table[a].items():
                merged[anchor] = merged.get(anchor, 0) + value
        assert rules.is_safe(merged) == block.publishable
    whole: dict[str, int] = {}
    for contributions in table.values():
        for anchor, value in contributions.items():
            whole[anchor] = whole.get(anchor, 0) + value
    if table and rules.is_safe(whole):
        assert all(b.publishable for b in blocks)
    assert sum(not b.publishable for b in blocks) <= 1


def test_a_block_split_between_cells_suppresses_them_and_a_block_cut_by_the_filter_the_totals() -> None:
    cells, totals = suppressed_figures(
        [
            BlockPlacement(publishable=True, inside={("55",)}),
            BlockPlacement(publishable=True, inside={("45",), ("50",)}),
            BlockPlacement(publishable=True, inside=set(), outside=True),
        ]
    )
    assert cells == {("45",), ("50",)} and not totals
    cells, totals = suppressed_figures([BlockPlacement(publishable=True, inside={("55",)}, outside=True)])
    assert cells == {("55",)} and totals
    cells, totals = suppressed_figures([BlockPlacement(publishable=False, inside={("55",)})])
    assert cells == {("55",)} and totals


@settings(max_examples=200, deadline=None)
@given(tables, st.integers(2, 4), st.sampled_from([0.5, 0.8, 1.0]))
def test_packed_atoms_give_the_same_blocks_as_tuples(table, k, share) -> None:
    rules = Rules(min_anchors=k, dominance_share=share)
    assert protection_blocks(table, rules) == build_blocks(table, rules, PROTECTION_LEVELS)
