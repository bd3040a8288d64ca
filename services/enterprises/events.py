"""Events the enterprises service publishes (payload models) and handlers of those it consumes."""

from __future__ import annotations

from shared.asyncapi import EventSpec
from shared.inbox import ConsumerSpec

SERVICE = "enterprises"

PUBLISHED: list[EventSpec] = []
CONSUMERS: list[ConsumerSpec] = []
