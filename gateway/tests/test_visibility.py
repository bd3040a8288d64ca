"""Type patterns and who sees which events (gateway.visibility)."""

from __future__ import annotations

import json

import pytest

from gateway.visibility import (
    ALL,
    NotVisible,
    matches_any,
    may_receive,
    may_see,
    minimal,
    narrow,
    parse_pattern,
)


def p(*texts: str) -> list:
    return [parse_pattern(text) for text in texts]


@pytest.mark.parametrize(
    ("pattern", "event_type", "matches"),
    [
        ("*", "mentoring.session.booked.v1", True),
        ("demand.*", "demand.item.published.v1", True),
        ("demand.*", "demandx.item.published.v1", False),
        ("demand.item.*", "demand.anchor.registered.v1", False),
        ("demand.item.published.*", "demand.item.published.v2", True),
        ("demand.item.published.v1", "demand.item.published.v1", True),
        ("demand.item.published.v1", "demand.item.published.v2", False),
    ],
)
def test_patterns_match_exact_types_and_dotted_prefixes(pattern: str, event_type: str, matches: bool) -> None:
    assert parse_pattern(pattern).matches(event_type) is matches


@pytest.mark.parametrize(
    "text",
    [
        "demand",
        "demand.item",
        "demand.>",
        "*.item.*",
        "Demand.*",
        "a.b.c.d.*",
        "demand.item.published.v0",
        "",
    ],
)
def test_what_is_not_a_type_or_a_prefix_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_pattern(text)


def test_patterns_become_nats_subject_filters() -> None:
    assert [x.nats_subject for x in p("*", "demand.*", "demand.item.published.v1")] == [
        ">",
        "demand.>",
        "demand.item.published.v1",
    ]


def test_who_sees_what() -> None:
    everything = [
        "enterprises.enterprise.registered.v1",
        "enterprises.milestone.verified.v1",
        "enterprises.readiness.changed.v1",
        "enterprises.bid.changed.v1",
        "demand.item.published.v1",
        "demand.item.awarded.v1",
        "demand.pipeline.published.v1",
        "mentoring.mentor.registered.v1",
        "mentoring.availability.changed.v1",
        "mentoring.session.booked.v1",
    ]
    seen = {
        role: [t for t in everything if may_see(role, t)]
        for role in ("staff", "anchor", "integrator", "mentor")
    }
    assert seen["staff"] == everything
    assert seen["anchor"] == [
        "demand.item.published.v1",
        "demand.item.awarded.v1",
        "demand.pipeline.published.v1",
        "mentoring.mentor.registered.v1",
        "mentoring.availability.changed.v1",
    ]
    assert seen["integrator"] == [
        "demand.item.published.v1",
        "demand.item.awarded.v1",
        "demand.pipeline.published.v1",
    ]
    assert seen["mentor"] == []


def test_a_request_is_narrowed_to_what_the_role_sees_and_refused_where_it_sees_nothing() -> None:
    public_demand = p("demand.anchor.*", "demand.item.*", "demand.pipeline.*")
    assert narrow("integrator", None) == public_demand
    assert narrow("integrator", p("*")) == public_demand
    # A match names an enterprise: never outside staff, whatever the pattern.
    assert narrow("integrator", p("demand.*")) == public_demand
    with pytest.raises(NotVisible):
        narrow("anchor", p("demand.match.*"))
    assert narrow("anchor", p("mentoring.*")) == p("mentoring.availability.*", "mentoring.mentor.*")
    assert narrow("staff", p("demand.item.*", "demand.*", "demand.item.published.v1")) == p("demand.*")
    with pytest.raises(NotVisible) as refused:
        narrow("integrator", p("demand.item.*", "enterprises.*", "mentoring.session.booked.v1"))
    assert refused.value.patterns == ["enterprises.*", "mentoring.session.booked.v1"]
    assert "integrator" in refused.value.detail
    with pytest.raises(NotVisible):
        narrow("enterprise", p("demand.*"))


def test_overlapping_filters_are_reduced_to_the_widest() -> None:
    assert minimal([ALL, *p("demand.*")]) == [ALL]
    assert minimal(p("demand.item.published.v1", "demand.item.*", "mentoring.*")) == p(
        "demand.item.*", "mentoring.*"
    )
    assert matches_any(p("demand.item.*", "mentoring.*"), "mentoring.session.booked.v1")


def test_a_stale_line_event_goes_only_to_its_own_anchor_and_staff() -> None:
    stale = "demand.item.stale.v1"
    event = {
        "type": stale,
        "data": {"demand_id": "line-1", "anchor_id": "anchor-a", "visibility": "aggregate_only"},
    }
    body = json.dumps(event).encode()
    assert may_see("staff", stale) and may_see("anchor", stale)
    assert not may_see("integrator", stale) and not may_see("mentor", stale)
    assert may_receive("staff", None, stale, body)
    assert may_receive("anchor", "anchor-a", stale, body)
    assert may_receive("anchor", "anchor-a", stale, event)  # as the webhook fan-out passes it
    assert not may_receive("anchor", "anchor-b", stale, body)
    assert not may_receive("anchor", None, stale, body)
    assert not may_receive("integrator", None, stale, body)
    # Other demand line events are for every anchor and integrator, whoever's line it is.
    published = "demand.item.published.v1"
    assert may_receive("anchor", "anchor-b", published, {"data": {"anchor_id": "anchor-a"}})
    assert may_receive("integrator", None, published, None)


def test_an_integrator_asking_for_stale_line_events_is_refused_and_not_sent_them() -> None:
    with pytest.raises(NotVisible):
        narrow("integrator", p("demand.item.stale.v1"))
    with pytest.raises(NotVisible):
        narrow("integrator", p("demand.item.stale.*"))
    # A wider pattern is granted; the stale events in it are dropped event by event.
    granted = narrow("integrator", p("demand.item.*"))
    assert granted == p("demand.item.*")
    assert not any(may_see("integrator", t) and matches_any(granted, t) for t in ["demand.item.stale.v1"])
    assert narrow("anchor", p("demand.item.stale.v1")) == p("demand.item.stale.v1")
