"""The gateway, as the command sees it: one HTTP client, and every failure as one line.

A refused request becomes a :class:`GatewayError` carrying the problem+json document the
gateway answered (RFC 9457: ``title``, ``detail``, and ``errors`` naming each bad field or
row), so a command can show the detail and, for an import, the table of bad rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_PORT = 8000
SAFE = frozenset({"GET", "PUT", "DELETE"})
BUSY = frozenset({502, 503, 504})
RETRIES = 3


def default_url() -> str:
    """The gateway ``make run`` starts on this machine."""
    return f"http://127.0.0.1:{os.environ.get('SEEDBED_GATEWAY_PORT', DEFAULT_PORT)}"


def staff_key_file() -> Path:
    """Where ``make run`` writes its staff key."""
    return Path(os.environ.get("SEEDBED_VAR_DIR", "var")) / "staff-key"


def default_key() -> str | None:
    path = staff_key_file()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class GatewayError(Exception):
    """A request that failed, said in one line (the command prints ``Error: ...``, exit 1)."""

    def __init__(
        self, message: str, problem: dict[str, Any] | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.problem = problem or {}
        self.status = status


def _field_summary(errors: list[dict[str, Any]], shown: int = 3) -> str:
    parts = []
    for error in errors[:shown]:
        where = f"row {error['row']} " if "row" in error else ""
        parts.append(f"{where}{error.get('field', '?')}: {error.get('message', '')}".strip())
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return "; ".join(parts) + more


def refusal(method: str, path: str, response: httpx.Response) -> GatewayError:
    """The one line for a refused request, with the problem's title, detail and bad fields."""
    problem: dict[str, Any] = {}
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            problem = body
    status = response.status_code
    title = problem.get("title") or response.reason_phrase
    detail = problem.get("detail") or response.text[:200].strip()
    if status == 401:
        message = f"the gateway refused the API key (401 {title}): {detail}"
    else:
        message = f"{method} {path} refused: {status} {title}"
        if detail:
            message += f": {detail}"
    errors = problem.get("errors")
    if isinstance(errors, list) and errors:
        message += f" [{_field_summary(errors)}]"
    return GatewayError(message, problem, status)


class Gateway:
    """A client of the gateway at ``url`` sending ``key`` (or no credential)."""

    def __init__(self, url: str, key: str | None, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def unreachable(self, exc: httpx.HTTPError) -> GatewayError:
        if isinstance(exc, httpx.TimeoutException):
            return GatewayError(f"the gateway at {self.url} did not answer in time ({type(exc).__name__})")
        return GatewayError(
            f"cannot reach the gateway at {self.url} ({type(exc).__name__}): is it running? "
            "Start it with `make run`, or name another with --url or SEEDBED_URL."
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        expect: Iterable[int] = (200, 201, 204),
        retry: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send it; a request that is safe to repeat (a read, a PUT, a DELETE, a create with an
        Idempotency-Key, or ``retry``) is tried again when a service is busy or down (502-504)."""
        headers = kwargs.get("headers") or {}
        repeatable = retry if retry is not None else method in SAFE or "Idempotency-Key" in headers
        for attempt in range(RETRIES + 1 if repeatable else 1):
            if attempt:
                time.sleep(0.5 * 2**attempt)
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                if repeatable and attempt < RETRIES:
                    continue
                raise self.unreachable(exc) from None
            except httpx.HTTPError as exc:
                raise self.unreachable(exc) from None
            if response.status_code in BUSY and repeatable and attempt < RETRIES:
                continue
            break
        if response.status_code not in set(expect):
            raise refusal(method, path, response)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=body, **kwargs)
        return response.json() if response.content else None

    def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PATCH", path, json=body, **kwargs).json()

    def put(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PUT", path, json=body, **kwargs).json()

    def delete(self, path: str, **kwargs: Any) -> None:
        self.request("DELETE", path, **kwargs)

    def pages(
        self, path: str, params: dict[str, Any] | None = None, limit: int = 500
    ) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list, following ``next_cursor``."""
        query = dict(params or {}) | {"limit": limit}
        while True:
            page = self.get(path, params=query)
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]
