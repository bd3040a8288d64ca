"""ETag preconditions."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from shared.http import check_if_match, etag
from shared.problems import Problem


def request_with(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "PATCH", "path": "/", "headers": raw})


def test_if_match() -> None:
    current = etag(3)
    check_if_match(request_with({}), current)
    check_if_match(request_with({"If-Match": current}), current)
    check_if_match(request_with({"If-Match": f'"1", {current}'}), current)
    check_if_match(request_with({"If-Match": "*"}), current)
    with pytest.raises(Problem) as raised:
        check_if_match(request_with({"If-Match": etag(2)}), current)
    assert raised.value.status == 412
