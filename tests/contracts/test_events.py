"""Event contracts: the producers' payload models, docs/EVENTS.md, the consumers' tolerant
models, the gateway's AsyncAPI document, and what really travels on NATS, held together.

Two halves:

- From the code alone: every type a producer declares (``PUBLISHED`` of each service's
  ``events.py``) is named in docs/EVENTS.md; every consumer has a tolerant model for each
  type its subjects take; every field a tolerant model reads exists in the producer's model
  with a type the consumer accepts (compared on their JSON schemas).
- From the running system: a module fixture drives every kind of change through the gateway
  (and moves the mentoring clock so that sessions can be completed, missed and reminded of),
  then reads every message off the services' streams. Each is a CloudEvents 1.0 structured
  JSON event, validates against its payload schema in ``/api/v1/asyncapi.json``, carries
  exactly its producer model's fields, and parses with every consumer's tolerant model with
  each field the consumer reads present.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, create_model

from services.demand import consumers as demand_consumers
from services.demand import events as demand_events
from services.enterprises import consumers as enterprises_consumers
from services.enterprises import events as enterprises_events
from services.mentoring import consumers as mentoring_consumers
from services.mentoring import events as mentoring_events
from services.mentoring import read_models as mentoring_read_models
from shared.asyncapi import EventSpec
from shared.events import CONTENT_TYPE, EVENT_TYPE_PATTERN
from shared.inbox import ConsumerSpec
from shared.testing.polling import wait_until
from shared.testing.system import System
from tests.conftest import (
    API,
    Captured,
    MentoringClock,
    book,
    created,
    enterprise_body,
    free_slot,
    ids,
    line_body,
    mentor_body,
    poll,
    stream_messages,
    submit,
)

ROOT = Path(__file__).resolve().parents[2]
EVENTS_MD = (ROOT / "docs" / "EVENTS.md").read_text()
PRODUCERS = {"enterprises": enterprises_events, "demand": demand_events, "mentoring": mentoring_events}
SPECS: dict[str, EventSpec] = {spec.type: spec for module in PRODUCERS.values() for spec in module.PUBLISHED}
CONSUMER_LISTS: list[list[ConsumerSpec]] = [
    enterprises_consumers.CONSUMERS,
    demand_consumers.CONSUMERS,
    mentoring_consumers.CONSUMERS,
]
CONSUMERS: dict[str, ConsumerSpec] = {spec.durable: spec for specs in CONSUMER_LISTS for spec in specs}


class ReadsNothing(BaseModel):
    """A type a consumer's subjects take and its handler passes by without reading it."""

    model_config = ConfigDict(extra="ignore")


# The tolerant model each consumer parses an event type with (as its handler dispatches). The
# types are written out, not taken from the producers' constants: a renamed type must show.
CONSUMED: dict[str, dict[str, type[BaseModel]]] = {
    "demand-enterprises": {
        "enterprises.enterprise.registered.v1": demand_consumers.EnterpriseSnapshotIn,
        "enterprises.enterprise.updated.v1": demand_consumers.EnterpriseSnapshotIn,
        "enterprises.enterprise.stage_changed.v1": demand_consumers.EnterpriseSnapshotIn,
        "enterprises.readiness.changed.v1": demand_consumers.ReadinessChangedIn,
    },
    "demand-catalogue": {
        "enterprises.milestone_definition.published.v1": demand_consumers.MilestoneDefinitionIn,
    },
    "demand-matching": {
        "demand.item.published.v1": demand_consumers.PublicLineIn,
        "demand.item.updated.v1": demand_consumers.PublicLineIn,
    },
    "mentoring-enterprises": {
        "enterprises.enterprise.registered.v1": mentoring_read_models.EnterpriseSnapshot,
        "enterprises.enterprise.updated.v1": mentoring_read_models.EnterpriseSnapshot,
        "enterprises.enterprise.stage_changed.v1": mentoring_read_models.EnterpriseSnapshot,
        "enterprises.readiness.changed.v1": mentoring_read_models.ReadinessChanged,
    },
    "enterprises-demand": {
        "demand.item.published.v1": enterprises_consumers.DemandLineIn,
        "demand.item.updated.v1": enterprises_consumers.DemandLineIn,
        "demand.item.withdrawn.v1": enterprises_consumers.DemandWithdrawnIn,
        "demand.item.stale.v1": ReadsNothing,  # its subjects take it; the handler passes it by
        "demand.item.awarded.v1": enterprises_consumers.DemandAwardedIn,
    },
    "enterprises-mentoring": {
        "mentoring.session.completed.v1": enterprises_consumers.SessionCompletedIn,
    },
}
CONSUMER_CASES = [(durable, kind) for durable, models in CONSUMED.items() for kind in models]

# Where a consumer asks for more than the producer's model promises, and why that holds.
NARROWER = {
    ("enterprises-demand", "demand_id"): "the demand service makes every line id with uuid.uuid4()",
    ("enterprises-demand", "anchor_id"): "the demand service makes every anchor id with uuid.uuid4()",
    ("enterprises-demand", "enterprise_id"): "an award names an enterprise by the id this service gave it",
    ("enterprises-demand", "awarded_on"): "the demand service writes the award date as YYYY-MM-DD",
}


# -- from the code ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_published_type_is_well_named_and_in_events_md(kind: str) -> None:
    assert EVENT_TYPE_PATTERN.match(kind)
    assert f"`{kind}`" in EVENTS_MD or _abbreviated_in_events_md(kind), f"docs/EVENTS.md never names {kind}"


def _abbreviated_in_events_md(kind: str) -> bool:
    """EVENTS.md names the siblings of a type written in full as ``.verified.v1`` (same paragraph)."""
    service, aggregate, action, version = kind.split(".")
    first = re.search(rf"`{service}\.{aggregate}\.[a-z_]+\.{version}`(?P<rest>(?:.|\n(?!\n))*)", EVENTS_MD)
    return first is not None and f"`.{action}.{version}`" in first.group("rest")


def test_events_md_names_no_type_that_no_one_publishes() -> None:
    named = set(re.findall(r"`((?:enterprises|demand|mentoring)\.[a-z_]+\.[a-z_]+\.v\d+)`", EVENTS_MD))
    assert named - set(SPECS) == set()


def test_every_consumer_is_in_events_md_and_has_its_models_here() -> None:
    assert set(CONSUMERS) == set(CONSUMED)
    for durable in CONSUMERS:
        assert f"`{durable}`" in EVENTS_MD, f"docs/EVENTS.md does not list the consumer {durable}"


@pytest.mark.parametrize("durable", sorted(CONSUMED))
def test_a_consumer_has_a_model_for_exactly_the_published_types_its_subjects_take(durable: str) -> None:
    spec = CONSUMERS[durable]
    taken = {kind for kind in SPECS if any(_subject_matches(f, kind) for f in spec.subjects)}
    assert taken, f"{durable} subscribes to {spec.subjects}, which no producer publishes"
    assert set(CONSUMED[durable]) == taken
    assert {SPECS[kind].type.split(".")[0].upper() for kind in taken} == {spec.stream}


def _subject_matches(pattern: str, subject: str) -> bool:
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


@pytest.mark.parametrize(("durable", "kind"), CONSUMER_CASES)
def test_what_a_consumer_reads_the_producer_sends_with_a_type_it_accepts(durable: str, kind: str) -> None:
    found = incompatibilities(CONSUMED[durable][kind], SPECS[kind].payload)
    allowed = {field for (who, field) in NARROWER if who == durable}
    assert [p for p in found if p.split(":")[0] not in allowed] == []


def test_the_comparison_finds_a_renamed_a_retyped_and_a_nullable_field() -> None:
    producer = enterprises_events.ReadinessChanged
    fields: dict[str, Any] = {
        name: (info.annotation, info) for name, info in producer.model_fields.items() if name != "missing"
    }
    renamed = create_model("Renamed", **fields, open_milestones=(list[str], ...))  # type: ignore[call-overload]
    assert incompatibilities(mentoring_read_models.ReadinessChanged, renamed) == [
        "missing: the producer has no such field"
    ]
    retyped = create_model("Retyped", __base__=producer, version=(str, ...))
    assert incompatibilities(demand_consumers.ReadinessChangedIn, retyped) == [
        "version: the producer sends string where integer is expected"
    ]
    nullable = create_model("Nullable", __base__=producer, enterprise_id=(uuid.UUID | None, ...))
    assert incompatibilities(mentoring_read_models.ReadinessChanged, nullable) == [
        "enterprise_id: the producer sends null where string is expected"
    ]
    assert incompatibilities(mentoring_read_models.ReadinessChanged, producer) == []


def incompatibilities(consumer: type[BaseModel], producer: type[BaseModel]) -> list[str]:
    """Where the producer's payload could fail the consumer, or leave a field it reads unset."""
    wanted = consumer.model_json_schema(mode="validation")
    sent = producer.model_json_schema(mode="serialization")
    return _object(wanted, sent, wanted.get("$defs", {}), sent.get("$defs", {}), "")


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _variants(schema: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(schema, defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [v for option in schema[key] for v in _variants(option, defs)]
    return [schema]


def _json_type(schema: dict[str, Any]) -> str | None:
    if "type" in schema:
        return str(schema["type"])
    values = [schema["const"]] if "const" in schema else schema.get("enum")
    if values:
        return {str: "string", bool: "boolean", int: "integer", float: "number"}[type(values[0])]
    return None  # anything


def _one(wanted: dict[str, Any], sent: dict[str, Any], wdefs: dict, sdefs: dict, at: str) -> list[str]:
    want, have = _json_type(wanted), _json_type(sent)
    if want is None:
        return []
    if have != want and not (want == "number" and have == "integer"):
        return [f"{at}: the producer sends {have or 'anything'} where {want} is expected"]
    problems = []
    if wanted.get("format") and wanted.get("format") != sent.get("format"):
        problems.append(
            f"{at}: the producer's {sent.get('format') or 'plain'} string is no {wanted['format']}"
        )
    accepted = [wanted["const"]] if "const" in wanted else wanted.get("enum")
    offered = [sent["const"]] if "const" in sent else sent.get("enum")
    if accepted is not None and (offered is None or set(offered) - set(accepted)):
        problems.append(f"{at}: the producer may send values outside {sorted(accepted)}")
    if want == "array":
        problems += _value(wanted.get("items", {}), sent.get("items", {}), wdefs, sdefs, f"{at}[]")
    if want == "object" and "properties" in wanted:
        problems += _object(wanted, sent, wdefs, sdefs, at)
    return problems


def _value(wanted: dict[str, Any], sent: dict[str, Any], wdefs: dict, sdefs: dict, at: str) -> list[str]:
    """Every shape the producer may send must be one the consumer takes."""
    problems: list[str] = []
    options = _variants(wanted, wdefs)
    for shape in _variants(sent, sdefs):
        tries = [_one(option, shape, wdefs, sdefs, at) for option in options]
        if all(tries):
            problems += min(tries, key=len)
    return problems


def _object(wanted: dict[str, Any], sent: dict[str, Any], wdefs: dict, sdefs: dict, at: str) -> list[str]:
    wanted, sent = _resolve(wanted, wdefs), _resolve(sent, sdefs)
    problems = []
    for name, schema in wanted.get("properties", {}).items():
        where = f"{at}.{name}" if at else name
        if name not in sent.get("properties", {}):
            problems.append(f"{where}: the producer has no such field")
            continue
        if name in wanted.get("required", []) and name not in sent.get("required", []):
            problems.append(f"{where}: the consumer needs it, the producer may leave it out")
        problems += _value(schema, sent["properties"][name], wdefs, sdefs, where)
    return problems


# -- from the running system ------------------------------------------------------------------


async def every_kind_of_change(system: System, clock: MentoringClock) -> None:
    """Drive every published event type out of the three services, through the gateway."""
    tag = uuid.uuid4().hex[:6]
    now = datetime.now(UTC)
    async with system.client() as staff:
        anchor = await created(staff, "/anchors", {"name": f"Contract anchor {tag}", "type": "university"})
        assert (
            await staff.patch(f"{API}/anchors/{anchor['id']}", json={"name": f"Renamed {tag}"})
        ).is_success
        line = await created(
            staff,
            "/demand",
            line_body(
                anchor["id"],
                f"Contract line {tag}",
                requirements=[{"code": "public_liability_insurance", "min_value_pence": 100_000_000}],
                delivery_area={"label": "Leeds", "postcode_areas": ["LS"], "postcode_districts": []},
                lots=[{"title": "North", "estimated_value_pence": 6_000_000, "cpv_codes": ["55300000"]}],
            ),
        )
        check(await staff.patch(f"{API}/demand/{line['id']}", json={"title": f"Retitled {tag}"}))
        gone = await created(staff, "/demand", line_body(anchor["id"], f"Contract gone {tag}"))
        hide = await staff.patch(f"{API}/demand/{gone['id']}", json={"visibility": "aggregate_only"})
        assert hide.is_success, hide.text
        # A line whose tender date passes (the demand service's clock moved on) goes stale.
        soon = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
        due = await created(
            staff, "/demand", line_body(anchor["id"], f"Contract due {tag}", expected_tender_date=soon)
        )
        clock.beside("demand-clock").set(timedelta(days=3))
        try:
            await until_published(system, "demand.item.stale.v1")
        finally:
            clock.beside("demand-clock").set(timedelta(0))
        assert (await staff.get(f"{API}/demand/{due['id']}")).json()["stale_since"] is not None

        enterprise = await created(
            staff, "/enterprises", enterprise_body(f"Contract CIC {tag}", stage="applicant", employees=6)
        )
        eid = enterprise["id"]
        check(await staff.patch(f"{API}/enterprises/{eid}", json={"stage": "incubating"}))
        check(await staff.patch(f"{API}/enterprises/{eid}", json={"name": f"Contract Co {tag}"}))
        # Once the enterprises service knows the line, the enterprise may bid on it.
        await poll(
            lambda: staff.get(f"{API}/enterprises/{eid}/readiness", params={"demand_id": line["id"]}),
            lambda r: r.status_code == 200,
        )
        bid = await created(
            staff, f"/enterprises/{eid}/bids", {"demand_id": line["id"], "status": "submitted"}
        )
        check(await staff.patch(f"{API}/bids/{bid['id']}", json={"status": "lost"}))
        # Once the demand service knows the enterprise, a change of the line announces the match.
        await poll(
            lambda: staff.get(f"{API}/demand/{line['id']}/candidates"),
            lambda r: eid in ids(r, "enterprise_id"),
        )
        check(await staff.patch(f"{API}/demand/{line['id']}", json={"title": f"Matched {tag}"}))
        # Another line is awarded to the enterprise (the matched one stays open for its match).
        won = await created(
            staff, "/demand", line_body(anchor["id"], f"Contract won {tag}", status="tendering")
        )
        award = {
            "supplier_name": f"Contract Co {tag}",
            "supplier_registration_number": "12345678",
            "enterprise_id": eid,
            "contract_value_pence": 11_500_000,
            "awarded_on": now.date().isoformat(),
        }
        check(await staff.put(f"{API}/demand/{won['id']}/award", json=award))
        milestones = f"{API}/enterprises/{eid}/milestones"
        enterprise_key = (await system.create_key("enterprise", eid))["key"]
        async with system.client(enterprise_key) as own:  # staff may not verify what they submitted
            await submit(own, eid, "public_liability_insurance", value_pence=200_000_000)
            await submit(own, eid, "employers_liability_insurance", value_pence=600_000_000)
            await submit(own, eid, "legal_entity")
        verify = {"status": "verified", "expires_at": (now + timedelta(days=10)).isoformat()}
        check(await staff.patch(f"{milestones}/public_liability_insurance", json=verify))
        lapse = {"status": "verified", "expires_at": (datetime.now(UTC) + timedelta(seconds=3)).isoformat()}
        check(await staff.patch(f"{milestones}/employers_liability_insurance", json=lapse))
        check(
            await staff.patch(
                f"{milestones}/legal_entity",
                json={"status": "rejected", "note": "The certificate names another company"},
            )
        )

        mentor = await created(staff, "/mentors", mentor_body(f"Contract Mentor {tag}", ["insurance"]))
        mid = mentor["id"]
        check(await staff.patch(f"{API}/mentors/{mid}", json={"bio": "Twenty years of cover"}))
        availability = mentor_body("x", [])["availability"] | {"slot_interval_minutes": 15}
        check(await staff.put(f"{API}/mentors/{mid}/availability", json=availability))
        # Two sessions soon (to complete and to miss), one later (to move and cancel).
        done = await book(staff, mid, eid, timedelta(minutes=90))
        missed = await book(staff, mid, eid, timedelta(minutes=150))
        moved = await book(staff, mid, eid, timedelta(days=2))
        # A free slot, not the same time plus some hours: that may fall outside the mentor's
        # availability (late in the day, or past midnight into a day without it).
        later = {"start": await free_slot(staff, mid, timedelta(days=3))}
        check(await staff.post(f"{API}/sessions/{moved['id']}/reschedule", json=later))
        cancel = {"reason": "The enterprise asked to"}
        check(await staff.post(f"{API}/sessions/{moved['id']}/cancel", json=cancel))

        # Half an hour before the first session: its one-hour reminder is due.
        clock.set(datetime.fromisoformat(done["start"]) - now - timedelta(minutes=30))
        await until_published(system, "mentoring.session.reminder_due.v1")
        clock.set(datetime.fromisoformat(missed["start"]) - now + timedelta(minutes=5))
        outcome = {"outcome": "Cover checked", "signed_off_milestones": ["public_liability_insurance"]}
        check(await staff.post(f"{API}/sessions/{done['id']}/complete", json=outcome))
        no_show = await staff.post(
            f"{API}/sessions/{missed['id']}/no-show", json={"absent_party": "enterprise"}
        )
        assert no_show.is_success, no_show.text
    # The jobs' events come a moment later; a type nothing above makes fails its own test below.
    with contextlib.suppress(AssertionError):
        await until_published(system, *SPECS)


def check(response: httpx.Response) -> None:
    assert response.is_success, f"{response.request.method} {response.request.url} -> {response.text}"


async def until_published(system: System, *kinds: str, timeout: float = 20.0) -> None:
    async def there() -> bool:
        return set(kinds) <= {m.subject for m in await stream_messages(system.nats.url)}

    try:
        await wait_until(there, timeout=timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(f"not all of {kinds} on the streams within {timeout}s") from None


@pytest.fixture(scope="module")
def captured(_booted: tuple[System, MentoringClock]) -> Iterator[list[Captured]]:
    system, clock = _booted
    try:
        asyncio.run(every_kind_of_change(system, clock))
    finally:
        clock.set(timedelta(0))
    yield asyncio.run(stream_messages(system.nats.url))


@pytest.fixture(scope="module")
def asyncapi(system: System) -> dict[str, Any]:
    with httpx.Client(base_url=system.url, headers={"Authorization": f"Bearer {system.staff_key}"}) as http:
        response = http.get(f"{API}/asyncapi.json")
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_the_running_system_publishes_every_declared_type(kind: str, captured: list[Captured]) -> None:
    assert any(m.subject == kind for m in captured), f"make {kind} happen in every_kind_of_change()"


ATTRIBUTES = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"}


def envelope_problems(message: Captured) -> list[str]:
    """Where a stored message is not a CloudEvents 1.0 structured JSON event of its producer."""
    event = message.event
    service = message.subject.split(".")[0]
    expected = {
        "specversion": "1.0",
        "type": message.subject,
        "source": f"/seedbed/{service}",
        "datacontenttype": "application/json",
    }
    problems = [f"{k} is {event.get(k)!r}, not {v!r}" for k, v in expected.items() if event.get(k) != v]
    if message.stream != service.upper():
        problems.append(f"stored in {message.stream}, not {service.upper()}")
    if message.subject not in SPECS:
        problems.append("a type no producer declares")
    if not (isinstance(event.get("id"), str) and event["id"]):
        problems.append("no id")
    elif message.headers.get("Nats-Msg-Id") != event["id"]:
        problems.append("the Nats-Msg-Id header is not the event id")
    if message.headers.get("Content-Type") != CONTENT_TYPE:
        problems.append(f"Content-Type {message.headers.get('Content-Type')!r}")
    if not (isinstance(event.get("subject"), str) and event["subject"]):
        problems.append("no subject (the aggregate's id)")
    try:
        if datetime.fromisoformat(str(event.get("time")).replace("Z", "+00:00")).tzinfo is None:
            problems.append("time without an offset")
    except ValueError:
        problems.append(f"time {event.get('time')!r} is not RFC 3339")
    if not isinstance(event.get("data"), dict):
        problems.append("data is not a JSON object")
    extensions = set(event) - ATTRIBUTES
    problems += [
        f"extension {name!r} is not a CloudEvents name"
        for name in extensions
        if not re.fullmatch(r"[a-z0-9]{1,20}", name)
    ]
    return problems


def schema_problems(message: Captured, asyncapi: dict[str, Any]) -> list[str]:
    """Where a message does not validate against its schema in the AsyncAPI document, or carries
    a field the schema does not describe."""
    components = asyncapi["components"]
    keys = [key for key, m in components["messages"].items() if m["name"] == message.subject]
    if len(keys) != 1:
        return [f"{len(keys)} messages named {message.subject} in the AsyncAPI document"]
    root = {"$ref": f"#/components/messages/{keys[0]}/payload", "components": components}
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    validator = jsonschema.Draft202012Validator(root, format_checker=checker)
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(message.event)
    ]
    ref = components["messages"][keys[0]]["payload"]["properties"]["data"]["$ref"]
    described = components["schemas"][ref.rsplit("/", 1)[-1]]["properties"]
    problems += [
        f"data/{name}: not in the schema" for name in set(message.event.get("data") or {}) - set(described)
    ]
    return problems


def producer_problems(message: Captured) -> list[str]:
    """Where a payload is not exactly its producer model (a dict-built payload drifting from it)."""
    model = SPECS[message.subject].payload
    data = message.event["data"]
    problems = [f"{name}: not a field of {model.__name__}" for name in set(data) - set(model.model_fields)]
    problems += [f"{name}: missing" for name in set(model.model_fields) - set(data)]
    try:
        model.model_validate(data)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def consumer_problems(durable: str, data: dict[str, Any], kind: str) -> list[str]:
    """Where a consumer's tolerant model fails a payload, or would fill in a field it reads."""
    model = CONSUMED[durable][kind]
    problems = [
        f"{name}: {durable} reads it, the event lacks it" for name in set(model.model_fields) - set(data)
    ]
    try:
        model.model_validate(data)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def test_every_message_is_a_structured_cloudevent_with_a_unique_id(captured: list[Captured]) -> None:
    assert {m.subject: envelope_problems(m) for m in captured if envelope_problems(m)} == {}
    ids = [m.event["id"] for m in captured]
    assert len(ids) == len(set(ids))


def test_every_message_validates_against_its_schema_in_the_asyncapi_document(
    captured: list[Captured], asyncapi: dict[str, Any]
) -> None:
    found = [(m.subject, m.sequence, schema_problems(m, asyncapi)) for m in captured]
    assert [problem for problem in found if problem[2]] == []


def test_every_payload_is_its_producer_model_field_for_field(captured: list[Captured]) -> None:
    assert {m.subject: producer_problems(m) for m in captured if producer_problems(m)} == {}


@pytest.mark.parametrize(("durable", "kind"), CONSUMER_CASES)
def test_a_consumer_parses_what_the_producer_sent_with_every_field_it_reads(
    durable: str, kind: str, captured: list[Captured]
) -> None:
    payloads = [m.event["data"] for m in captured if m.subject == kind]
    assert payloads, f"no {kind} was captured"
    assert [
        consumer_problems(durable, data, kind) for data in payloads if consumer_problems(durable, data, kind)
    ] == []


def test_the_checks_of_captured_messages_fail_on_a_doctored_one(
    captured: list[Captured], asyncapi: dict[str, Any]
) -> None:
    """A producer renaming ``missing`` would be caught by every check of the running system."""
    [real, *_] = [m for m in captured if m.subject == "enterprises.readiness.changed.v1"]
    event = real.event
    event["data"]["open_milestones"] = event["data"].pop("missing")
    event["time"] = "yesterday"
    doctored = Captured(real.stream, real.sequence, real.subject, real.headers, json.dumps(event).encode())
    assert envelope_problems(doctored) == ["time 'yesterday' is not RFC 3339"]
    assert "data/open_milestones: not in the schema" in schema_problems(doctored, asyncapi)
    assert any("missing" in p and "required" in p for p in schema_problems(doctored, asyncapi))
    assert {"open_milestones: not a field of ReadinessChanged", "missing: missing"} <= set(
        producer_problems(doctored)
    )
    assert consumer_problems("mentoring-enterprises", doctored.event["data"], real.subject)[0] == (
        "missing: mentoring-enterprises reads it, the event lacks it"
    )
    assert consumer_problems("demand-enterprises", doctored.event["data"], real.subject) == [
        "missing: demand-enterprises reads it, the event lacks it"
    ]
    for check in (envelope_problems(real), schema_problems(real, asyncapi), producer_problems(real)):
        assert check == []
