"""The CloudEvents 1.0 envelope (structured JSON mode) and event naming.

Subject = ``<service>.<aggregate>.<event>.v<N>``; the CloudEvents ``type`` is the
same string. One JetStream stream per producing service (``DEMAND`` on ``demand.>``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CONTENT_TYPE = "application/cloudevents+json"
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.v[1-9][0-9]*$")


def event_type(service: str, aggregate: str, action: str, version: int = 1) -> str:
    """``event_type("demand", "item", "published")`` -> ``demand.item.published.v1``."""
    name = f"{service}.{aggregate}.{action}.v{version}"
    if not EVENT_TYPE_PATTERN.match(name):
        raise ValueError(f"not a valid event type: {name!r}")
    return name


def event_source(service: str) -> str:
    return f"/seedbed/{service}"


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream owned by one producing service."""

    name: str
    subjects: list[str] = field(default_factory=list)
    duplicate_window_seconds: float = 300.0
    max_age_seconds: float = 0.0  # 0: keep until limits say otherwise
    replicas: int = 1


def stream_for(
    service: str,
    *,
    max_age_seconds: float = 0.0,
    replicas: int = 1,
    duplicate_window_seconds: float = 300.0,
) -> StreamSpec:
    """The stream of a producing service: ``stream_for("demand")`` is ``DEMAND`` on ``demand.>``."""
    return StreamSpec(
        name=service.upper(),
        subjects=[f"{service}.>"],
        duplicate_window_seconds=duplicate_window_seconds,
        max_age_seconds=max_age_seconds,
        replicas=replicas,
    )


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: str = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str
    type: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str | None = None
    datacontenttype: str = "application/json"
    data: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CloudEvent:
        return cls.model_validate_json(raw)


def new_event(
    type: str,
    data: BaseModel | dict[str, Any],
    *,
    source: str,
    subject: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """Build an event; ``data`` is a payload model (dumped as JSON) or a plain dict."""
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return CloudEvent(
        type=type,
        source=source,
        subject=subject,
        data=payload,
        time=time or datetime.now(UTC),
    )
