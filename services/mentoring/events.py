"""Events the mentoring service publishes (payload models) and handlers of those it consumes."""

from __future__ import annotations

from shared.asyncapi import EventSpec
from shared.inbox import ConsumerSpec

SERVICE = "mentoring"

PUBLISHED: list[EventSpec] = []
CONSUMERS: list[ConsumerSpec] = []
