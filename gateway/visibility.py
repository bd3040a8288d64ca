"""Which event types each role may see, on the event stream, in webhooks and in the AsyncAPI document.

The rule: a role sees the events about what docs/ACCESS.md lets it read through the API.

- ``staff``: everything.
- ``anchor``: ``demand.*`` but matches (every line, anchor and pipeline event of demand is
  public by construction: an ``aggregate_only`` or draft line never appears in one; anchors
  and the pipeline are readable by all; ``demand.match.*`` names enterprises), and mentor
  profiles (``mentoring.mentor.*``,
  ``mentoring.availability.*``), which an anchor may read with ``GET /mentors``. Of the events
  about one anchor's own lines (``demand.item.stale.*``: drafts and aggregate-only lines
  included), only those of its own lines (``data.anchor_id``).
- ``integrator``: ``demand.*`` but matches and the events about one anchor's own lines.
- ``enterprise``, ``mentor``: nothing (ACCESS.md refuses them the stream, 403).

Never visible outside staff: milestone, readiness and session events (evidence and personal
scheduling), bid events (``enterprises.bid.*``: a bid is its enterprise's and staff's, and
enterprises are refused the stream; an anchor reads the bids on its own line through the API
once the line is awarded), and the enterprise events: ACCESS.md answers an anchor 404 and an integrator 403
for any enterprise, so an event carrying the enterprise's snapshot (postcode, turnover,
employees) would be a side door to what the API refuses them. Likewise mentor events for
integrators (``GET /mentors`` is 403 for them). Widening a role is one line of ``VISIBLE``;
change ACCESS.md with it.

Type patterns (``types=`` on the stream, ``types`` of a webhook subscription): an exact type
(``demand.item.published.v1``), a dotted prefix ending in ``.*`` (``demand.*``,
``demand.item.*``, any version: ``demand.item.published.*``), or ``*`` for all the caller may
see. A pattern is narrowed to what the role may see; one that can match nothing the role may
see is refused (403 naming it), so a typo'd or forbidden filter is not a silent empty stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shared.events import EVENT_TYPE_PATTERN

_SEGMENT = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_PREFIX_SEGMENTS = 3  # service.aggregate.event: the version is the fourth


@dataclass(frozen=True, order=True)
class TypePattern:
    """An exact event type (``exact``) or every type under ``segments`` (a prefix; () is all)."""

    segments: tuple[str, ...]
    exact: bool = False

    def __str__(self) -> str:
        if self.exact:
            return ".".join(self.segments)
        return ".".join((*self.segments, "*"))

    @property
    def nats_subject(self) -> str:
        """The NATS subject filter of the same events (subjects are the event types)."""
        if self.exact:
            return ".".join(self.segments)
        return ".".join((*self.segments, ">"))

    def matches(self, event_type: str) -> bool:
        parts = tuple(event_type.split("."))
        if self.exact:
            return parts == self.segments
        return len(parts) > len(self.segments) and parts[: len(self.segments)] == self.segments

    def covers(self, other: TypePattern) -> bool:
        """Every type ``other`` matches, this matches too."""
        if self.exact:
            return other == self
        n = len(self.segments)
        return len(other.segments) > n - (0 if other.exact else 1) and other.segments[:n] == self.segments

    def meet(self, other: TypePattern) -> TypePattern | None:
        """The types both match, as one pattern (prefix patterns nest or are disjoint)."""
        if self.covers(other):
            return other
        if other.covers(self):
            return self
        return None


ALL = TypePattern(())


def parse_pattern(text: str) -> TypePattern:
    """A type pattern from its text; ValueError saying what is wrong."""
    text = text.strip()
    if text == "*":
        return ALL
    if text.endswith(".*"):
        segments = tuple(text[:-2].split("."))
        if len(segments) > MAX_PREFIX_SEGMENTS or not all(_SEGMENT.match(s) for s in segments):
            raise ValueError(f"{text!r} is not a type pattern (e.g. 'demand.*', 'demand.item.*')")
        return TypePattern(segments)
    if EVENT_TYPE_PATTERN.match(text):
        return TypePattern(tuple(text.split(".")), exact=True)
    raise ValueError(
        f"{text!r} is neither an event type (e.g. 'demand.item.published.v1') "
        "nor a pattern ending in '.*' (e.g. 'demand.*')"
    )


def _patterns(*texts: str) -> tuple[TypePattern, ...]:
    return tuple(parse_pattern(text) for text in texts)


# The one place that says who sees what (see the module docstring for why).
# Not demand.match.*: a match names an enterprise, which only staff (and, through the API, the
# line's own anchor) may know of.
PUBLIC_DEMAND = ("demand.anchor.*", "demand.item.*", "demand.pipeline.*")
VISIBLE: dict[str, tuple[TypePattern, ...]] = {
    "staff": (ALL,),
    "anchor": _patterns(*PUBLIC_DEMAND, "mentoring.mentor.*", "mentoring.availability.*"),
    "integrator": _patterns(*PUBLIC_DEMAND),
}
STREAM_ROLES = tuple(VISIBLE)  # the roles that may use the stream, webhooks and the AsyncAPI document


# Events about one anchor's own line, whatever the line's visibility (a stale draft): staff see
# them all; a role in OWNERS sees those whose ``data`` field names its subject; no one else any.
OWN_LINE_EVENTS = _patterns("demand.item.stale.*")
OWNERS: dict[str, str] = {"anchor": "anchor_id"}


def visible_patterns(role: str) -> tuple[TypePattern, ...]:
    return VISIBLE.get(role, ())


def _owner_only(role: str, event_type: str) -> bool:
    return role != "staff" and matches_any(OWN_LINE_EVENTS, event_type)


def may_see(role: str, event_type: str) -> bool:
    """Whether ``role`` may see some events of this type (for an owner-only type, its own ones)."""
    if _owner_only(role, event_type) and role not in OWNERS:
        return False
    return any(pattern.matches(event_type) for pattern in VISIBLE.get(role, ()))


def may_receive(
    role: str, subject_id: str | None, event_type: str, body: bytes | dict[str, Any] | None
) -> bool:
    """Whether this one event goes to a principal: :func:`may_see`, and for an owner-only type the
    event is about the principal's own object. ``body`` is the CloudEvent (bytes or dict), read only
    for owner-only types."""
    if not may_see(role, event_type):
        return False
    if not _owner_only(role, event_type):
        return True
    event = json.loads(body) if isinstance(body, bytes | bytearray) else body
    data = event.get("data") if isinstance(event, dict) else None
    return subject_id is not None and isinstance(data, dict) and data.get(OWNERS[role]) == subject_id


def _hidden(role: str, pattern: TypePattern) -> bool:
    """Every type the pattern matches is owner-only and the role owns nothing."""
    return role != "staff" and role not in OWNERS and any(own.covers(pattern) for own in OWN_LINE_EVENTS)


def minimal(patterns: Iterable[TypePattern]) -> list[TypePattern]:
    """The same set of types with no pattern covered by another (NATS refuses overlapping filters)."""
    unique = sorted(set(patterns), key=lambda p: (len(p.segments), p.exact, p.segments))
    kept: list[TypePattern] = []
    for pattern in unique:
        if not any(other.covers(pattern) for other in kept):
            kept.append(pattern)
    return sorted(kept)


class NotVisible(Exception):
    """Patterns that can match no event type the role may see."""

    def __init__(self, role: str, patterns: Sequence[str]) -> None:
        super().__init__(", ".join(patterns))
        self.role = role
        self.patterns = list(patterns)

    @property
    def detail(self) -> str:
        names = ", ".join(repr(p) for p in self.patterns)
        allowed = ", ".join(str(p) for p in VISIBLE.get(self.role, ())) or "none"
        return f"The {self.role} role may not see events of {names}; it sees: {allowed}."


def narrow(role: str, requested: Iterable[TypePattern] | None) -> list[TypePattern]:
    """What a role asking for ``requested`` (None: everything) gets: the part of each pattern it
    may see. Raises :class:`NotVisible` naming the patterns of which it may see nothing."""
    allowed = VISIBLE.get(role, ())
    if requested is None:
        return minimal(allowed)
    granted: list[TypePattern] = []
    refused: list[str] = []
    for pattern in requested:
        parts = [
            meet
            for visible in allowed
            if (meet := pattern.meet(visible)) is not None and not _hidden(role, meet)
        ]
        if parts:
            granted.extend(parts)
        else:
            refused.append(str(pattern))
    if refused:
        raise NotVisible(role, refused)
    return minimal(granted)


def matches_any(patterns: Iterable[TypePattern], event_type: str) -> bool:
    return any(pattern.matches(event_type) for pattern in patterns)
