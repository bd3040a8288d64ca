"""The events this service publishes, as docs/EVENTS.md (mentoring section) names them."""

from __future__ import annotations

from fastapi import FastAPI

from services.mentoring import events
from shared.testing.apps import STAFF, client

SESSION_FIELDS = {
    "session_id", "sequence", "mentor_id", "enterprise_id", "start", "end", "timezone", "topic", "status",
    "milestone_code",
}  # fmt: skip
MENTOR_FIELDS = {"mentor_id", "version", "name", "organisation", "expertise", "timezone"}


def fields(type_: str) -> set[str]:
    spec = next(spec for spec in events.PUBLISHED if spec.type == type_)
    return set(spec.payload.model_fields)


def test_payloads_carry_exactly_the_documented_fields() -> None:
    assert fields("mentoring.mentor.registered.v1") == MENTOR_FIELDS
    assert fields("mentoring.availability.changed.v1") == MENTOR_FIELDS
    for action in ("booked", "rescheduled", "no_show"):
        assert fields(f"mentoring.session.{action}.v1") == SESSION_FIELDS
    assert fields("mentoring.session.cancelled.v1") == SESSION_FIELDS | {"reason"}
    assert fields("mentoring.session.completed.v1") == SESSION_FIELDS | {"outcome", "signed_off_milestones"}
    assert fields("mentoring.session.reminder_due.v1") == SESSION_FIELDS | {"remind_before_minutes"}


async def test_the_asyncapi_document_lists_every_published_event(app: FastAPI) -> None:
    async with client(app, STAFF) as http:
        document = (await http.get("/asyncapi.json")).json()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {spec.type for spec in events.PUBLISHED}
    assert {
        "mentoring.mentor.registered.v1",
        "mentoring.availability.changed.v1",
        "mentoring.session.booked.v1",
        "mentoring.session.rescheduled.v1",
        "mentoring.session.cancelled.v1",
        "mentoring.session.completed.v1",
        "mentoring.session.no_show.v1",
        "mentoring.session.reminder_due.v1",
    } <= addresses
