"""Cursors and ETag preconditions."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from shared.http import check_if_match, decode_cursor, encode_cursor, etag
from shared.problems import Problem


def request_with(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "PATCH", "path": "/", "headers": raw})


def test_cursor_round_trips() -> None:
    values = ["2027-01-01T00:00:00+00:00", "0b6f1c1e-0000-4000-8000-000000000000"]
    assert decode_cursor(encode_cursor(values), 2) == values
    assert decode_cursor(None, 2) is None


@pytest.mark.parametrize("cursor", ["!!!", encode_cursor(["only-one"]), "e30"])
def test_foreign_cursor_is_a_validation_problem_naming_cursor(cursor: str) -> None:
    with pytest.raises(Problem) as raised:
        decode_cursor(cursor, 2)
    assert raised.value.status == 422
    assert raised.value.errors == [{"field": "cursor", "message": "not a cursor issued by this API"}]


def test_if_match() -> None:
    current = etag(3)
    check_if_match(request_with({}), current)
    check_if_match(request_with({"If-Match": current}), current)
    check_if_match(request_with({"If-Match": f'"1", {current}'}), current)
    check_if_match(request_with({"If-Match": "*"}), current)
    with pytest.raises(Problem) as raised:
        check_if_match(request_with({"If-Match": etag(2)}), current)
    assert raised.value.status == 412
