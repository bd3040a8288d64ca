"""CloudEvents envelope, naming, AsyncAPI generation and settings."""

from __future__ import annotations

import json
import secrets

import pytest
from pydantic import BaseModel, ValidationError

from shared.asyncapi import EventSpec, asyncapi_document
from shared.events import CloudEvent, event_type, new_event, stream_for
from shared.settings import DEVELOPMENT_SECRET, ServiceSettings, weak_secret


class ItemPublished(BaseModel):
    demand_id: str
    value_pence: int


def test_event_type_names_service_aggregate_event_and_version() -> None:
    assert event_type("demand", "item", "published") == "demand.item.published.v1"
    assert event_type("mentoring", "session", "reminder_due", 2) == "mentoring.session.reminder_due.v2"
    with pytest.raises(ValueError, match="not a valid event type"):
        event_type("Demand", "item", "published")


def test_stream_per_producing_service() -> None:
    spec = stream_for("demand")
    assert spec.name == "DEMAND" and spec.subjects == ["demand.>"]


def test_cloudevent_round_trips_in_structured_json() -> None:
    event = new_event(
        "demand.item.published.v1",
        ItemPublished(demand_id="d1", value_pence=5),
        source="/seedbed/demand",
        subject="d1",
    )
    raw = json.loads(event.to_bytes())
    assert raw["specversion"] == "1.0"
    assert {"id", "source", "type", "time", "subject", "datacontenttype", "data"} <= raw.keys()
    assert raw["data"] == {"demand_id": "d1", "value_pence": 5}
    assert CloudEvent.from_bytes(event.to_bytes()) == event
    with pytest.raises(ValidationError):
        CloudEvent.from_bytes(b'{"specversion": "1.0"}')


def test_asyncapi_document_lists_each_event_with_its_payload_schema() -> None:
    doc = asyncapi_document(
        "demand",
        "1.0.0",
        [EventSpec("demand.item.published.v1", ItemPublished, "A public line was published.")],
    )
    assert doc["asyncapi"] == "3.0.0"
    channel = doc["channels"]["demand_item_published_v1"]
    assert channel["address"] == "demand.item.published.v1"
    data = doc["components"]["schemas"]["demand_item_published_v1_data"]
    assert set(data["properties"]) == {"demand_id", "value_pence"}


class DemoSettings(ServiceSettings):
    service_name = "demo"


def test_production_refuses_the_development_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEEDBED_ENVIRONMENT", "production")
    monkeypatch.delenv("SEEDBED_INTERNAL_SECRET", raising=False)
    with pytest.raises(ValidationError, match="SEEDBED_INTERNAL_SECRET"):
        DemoSettings()
    random = secrets.token_urlsafe(32)
    monkeypatch.setenv("SEEDBED_INTERNAL_SECRET", random)
    assert DemoSettings().internal_secret.get_secret_value() == random


@pytest.mark.parametrize(
    "weak", ["a" * 32, "x" * 40, "password" * 4, "0123456789abcdef" * 2, "short-but-random-Zq8"]
)
def test_production_refuses_a_short_or_low_entropy_secret(monkeypatch: pytest.MonkeyPatch, weak: str) -> None:
    monkeypatch.setenv("SEEDBED_ENVIRONMENT", "production")
    monkeypatch.setenv("SEEDBED_INTERNAL_SECRET", weak)
    with pytest.raises(ValidationError, match="SEEDBED_INTERNAL_SECRET"):
        DemoSettings()
    monkeypatch.setenv("SEEDBED_ENVIRONMENT", "development")
    assert DemoSettings().internal_secret.get_secret_value() == weak  # what development allows


def test_random_secrets_of_32_characters_pass_the_entropy_check() -> None:
    for _ in range(1000):
        assert weak_secret(secrets.token_hex(16)) is None
        assert weak_secret(secrets.token_urlsafe(24)) is None


def test_development_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("SEEDBED_ENVIRONMENT", raising=False)
    monkeypatch.delenv("SEEDBED_INTERNAL_SECRET", raising=False)
    monkeypatch.setenv("SEEDBED_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("NATS_URL", "nats://example:4333")
    settings = DemoSettings()
    assert settings.internal_secret.get_secret_value() == DEVELOPMENT_SECRET
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path}/demo.db"
    assert settings.nats_url == "nats://example:4333"
