"""Schemathesis against the gateway's own OpenAPI document, with a staff key, over the whole
running system: no 5xx, and every answer conforms to the document (status, content type,
headers, body schema). A bounded number of generated requests per operation keeps it short."""

from __future__ import annotations

import os

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.tests.conftest import System

EXAMPLES_PER_OPERATION = int(os.environ.get("SEEDBED_SCHEMATHESIS_EXAMPLES", "10"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Paths whose calls would undo the test itself (revoking the staff key it uses).
SKIPPED_OPERATIONS = {("DELETE", "/api/v1/api-keys/{key_id}")}


def _summary(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, BaseExceptionGroup):
        text = "\n".join(str(e)[:600] for e in exc.exceptions)
    return text[:1500]


def test_every_operation_answers_as_documented(system: System) -> None:
    schema = schemathesis.openapi.from_url(system.url + "/openapi.json")
    assert "x-seedbed-unavailable-services" not in schema.raw_schema["info"], "a service document is missing"
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {system.staff_key}"
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
            max_examples=EXAMPLES_PER_OPERATION,
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
        pytest.fail(f"{len(failures)} of {operations} operations do not answer as documented:\n\n{report}")
