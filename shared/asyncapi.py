"""AsyncAPI 3.0 documents generated from the services' event payload models."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.events import CONTENT_TYPE


@dataclass(frozen=True)
class EventSpec:
    """One event type a service publishes: its CloudEvents type and payload model."""

    type: str
    payload: builtins.type[BaseModel]
    summary: str


def _envelope(spec: EventSpec, payload_ref: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "description": "Event id; also the Nats-Msg-Id."},
            "source": {"type": "string", "format": "uri-reference"},
            "type": {"const": spec.type},
            "time": {"type": "string", "format": "date-time"},
            "subject": {"type": "string", "description": "Id of the aggregate the event is about."},
            "datacontenttype": {"const": "application/json"},
            "data": {"$ref": payload_ref},
        },
    }


def asyncapi_document(title: str, version: str, events: Sequence[EventSpec]) -> dict[str, Any]:
    """Channels (one per subject), messages and payload schemas of ``events``."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for spec in events:
        key = spec.type.replace(".", "_")
        schema = spec.payload.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas[f"{key}_data"] = schema
        messages[key] = {
            "name": spec.type,
            "title": spec.type,
            "summary": spec.summary,
            "contentType": CONTENT_TYPE,
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {"type": "string"},
                    "Content-Type": {"const": CONTENT_TYPE},
                },
            },
            "payload": _envelope(spec, f"#/components/schemas/{key}_data"),
        }
        channels[key] = {
            "address": spec.type,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"receive_{key}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": spec.summary,
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": title, "version": version},
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
