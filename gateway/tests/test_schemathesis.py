"""Schemathesis against the gateway's own OpenAPI document, as staff, an anchor and an
integrator, over the whole running system, with every check schemathesis has but one (see
CHECKS): no 5xx, every answer conforms to the document (status, content type, headers, body
schema), bad data is refused. A bounded number of generated requests per operation keeps it
short; the long run (``slow``) generates ten times as many."""

from __future__ import annotations

import os

import hypothesis
import pytest
import requests
import schemathesis
import schemathesis.checks
from hypothesis import HealthCheck, Phase

from gateway.tests.conftest import System

EXAMPLES_PER_OPERATION = int(os.environ.get("SEEDBED_SCHEMATHESIS_EXAMPLES", "10"))
schemathesis.checks.load_all_checks()
# Every check but positive_data_acceptance: a cursor is opaque (any string is schema-valid, only the
# API's own are accepted) and rules across fields and rows answer 422 to schema-valid requests.
CHECKS = [c for c in schemathesis.checks.CHECKS.get_all() if c.__name__ != "positive_data_acceptance"]
# Paths whose calls would undo the test itself (revoking the staff key it uses).
SKIPPED_OPERATIONS = {("DELETE", "/api/v1/api-keys/{key_id}")}


def _summary(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, BaseExceptionGroup):
        text = "\n".join(str(e)[:600] for e in exc.exceptions)
    return text[:1500]


def key_of(system: System, role: str) -> str:
    """A key of ``role``: staff's own, or a new one (an anchor's names a new anchor)."""
    if role == "staff":
        return system.staff_key
    staff = requests.Session()
    staff.headers["Authorization"] = f"Bearer {system.staff_key}"
    subject = None
    if role == "anchor":
        anchor = staff.post(
            system.url + "/api/v1/anchors", json={"name": "Fuzzed", "type": "local_authority"}
        )
        assert anchor.status_code == 201, anchor.text
        subject = anchor.json()["id"]
    created = staff.post(
        system.url + "/api/v1/api-keys", json={"role": role, "subject_id": subject, "name": f"fuzz {role}"}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


ROLES = ["staff", "anchor", "integrator"]


@pytest.mark.parametrize("role", ROLES)
def test_every_operation_answers_as_documented(system: System, role: str) -> None:
    check_every_operation(system, role, EXAMPLES_PER_OPERATION)


@pytest.mark.long
@pytest.mark.parametrize("role", ROLES)
def test_every_operation_answers_as_documented_long_run(system: System, role: str) -> None:
    check_every_operation(system, role, EXAMPLES_PER_OPERATION * 10)


def check_every_operation(system: System, role: str, examples: int) -> None:
    schema = schemathesis.openapi.from_url(system.url + "/openapi.json")
    assert "x-seedbed-unavailable-services" not in schema.raw_schema["info"], "a service document is missing"
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key_of(system, role)}"
    failures: dict[str, list[str]] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED_OPERATIONS:
            continue
        if operation.definition.raw.get("x-seedbed-streaming"):
            continue  # a stream that never ends (SSE): tested in test_event_stream.py
        operations += 1
        label = f"{operation.method.upper()} {operation.path}"

        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=system.url, session=session, checks=CHECKS, timeout=15)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # one operation's failure must not hide the others'
            failures.setdefault(label, []).append(_summary(exc))
    assert operations >= 20
    if failures:
        report = "\n\n".join(f"{label}:\n" + "\n".join(errors) for label, errors in sorted(failures.items()))
        pytest.fail(
            f"as {role}: {len(failures)} of {operations} operations do not answer as documented:\n\n{report}"
        )
