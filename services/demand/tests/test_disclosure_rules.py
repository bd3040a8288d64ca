"""The disclosure rules (pure logic): the static rule on a figure and the change rule over time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.demand.disclosure import Rules, change, may_release

RULES = Rules(min_anchors=3, dominance_share=0.8)


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


def test_a_first_release_needs_only_the_static_rule() -> None:
    three = {"a": (1, 10, 10), "b": (1, 10, 10), "c": (1, 10, 10)}
    assert may_release(three, [], RULES)
    assert not may_release({"a": (1, 10, 10), "b": (1, 10, 10)}, [], RULES)
    assert not may_release({"a": (1, 90, 90), "b": (1, 5, 5), "c": (1, 5, 5)}, [], RULES)
    assert may_release({}, [], RULES)  # nothing to show


def test_a_change_by_one_anchor_is_held_back() -> None:
    before = {"a": (1, 10, 10), "b": (1, 10, 10), "c": (1, 10, 10)}
    after = before | {"d": (1, 7, 7)}  # safe alone, but the difference is d's line
    assert may_release(after, [], RULES)
    assert not may_release(after, [before], RULES)


def test_a_change_must_be_safe_against_every_state_ever_published() -> None:
    first = {"a": (1, 10, 10), "b": (1, 10, 10), "c": (1, 10, 10)}
    second = {"a": (1, 12, 12), "b": (1, 12, 12), "c": (1, 12, 12)}
    third = {
        "a": (1, 12, 12),
        "b": (1, 12, 12),
        "c": (1, 12, 12),
        "d": (1, 3, 3),
        "e": (1, 3, 3),
        "f": (1, 3, 3),
    }
    assert may_release(third, [second], RULES)
    # Against the first, d, e and f added 9 while a, b and c added 6: still safe.
    assert may_release(third, [first, second], RULES)
    fourth = first | {"a": (1, 50, 50)}  # back to the first but for a: the difference is a's alone
    assert not may_release(fourth, [first, second, third], RULES)


def test_annualised_value_and_counts_move_only_under_the_rule() -> None:
    before = {"a": (1, 10, 10), "b": (1, 10, 10), "c": (1, 10, 10)}
    longer = before | {"a": (1, 10, 5)}  # one anchor's contract got longer: value same, per year not
    assert change(before, longer) == {"a": (0, 0, 5)}
    assert not may_release(longer, [before], RULES)


def test_emptying_a_published_block_is_allowed_when_each_published_state_was_safe() -> None:
    first = {"a": (1, 10, 10), "b": (1, 10, 10), "c": (1, 10, 10)}
    assert may_release({}, [first], RULES)


anchors = st.sampled_from("abcdef")
states = st.dictionaries(
    anchors, st.tuples(st.integers(1, 3), st.integers(0, 1000), st.integers(0, 1000)), max_size=5
)


@settings(max_examples=200, deadline=None)
@given(st.lists(states, max_size=6), states, st.integers(2, 4), st.sampled_from([0.5, 0.8, 1.0]))
def test_every_allowed_release_differs_safely_from_every_published_state(history, live, k, share) -> None:
    rules = Rules(min_anchors=k, dominance_share=share)
    if not may_release(live, history, rules):
        return
    if live:
        assert rules.is_safe({a: v for a, (_, v, _) in live.items()})
    for earlier in history:
        moved = change(earlier, live)
        if moved:
            assert len(moved) >= k
            assert rules.is_safe({a: d[1] for a, d in moved.items()})
            assert rules.is_safe({a: d[2] for a, d in moved.items()})
