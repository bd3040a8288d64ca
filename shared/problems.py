"""RFC 9457 problem details (``application/problem+json``) for every error."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shared.logs import request_id_var

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://seedbed.dev/problems/"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": True},
            "description": "Each bad field (or row): field, message (and row for imports).",
        },
    },
    "additionalProperties": True,
}
PROBLEM_REF = "#/components/schemas/Problem"


class Problem(Exception):
    """An error answered as problem+json. Raise it from use cases and dependencies."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type: str | None = None,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors = list(errors) if errors is not None else None
        self.headers = headers
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.type if self.type else "about:blank",
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        request_id = request_id_var.get()
        if request_id:
            body["request_id"] = request_id
        return body


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    return JSONResponse(
        problem.body(instance),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


def not_found(what: str, ident: object) -> Problem:
    return Problem(404, f"{what} not found", f"No {what.lower()} with id {ident}.", type="not-found")


def forbidden(detail: str) -> Problem:
    return Problem(403, "Forbidden", detail, type="forbidden")


def conflict(detail: str, **extra: Any) -> Problem:
    return Problem(409, "Conflict", detail, type="conflict", **extra)


def field_errors(errors: Sequence[dict[str, Any]], detail: str | None = None) -> Problem:
    """422 listing each bad field: ``[{"field": "postcode", "message": "..."}]``."""
    fields = ", ".join(dict.fromkeys(str(e["field"]) for e in errors))
    return Problem(
        422,
        "Request validation failed",
        detail or f"Invalid value for: {fields}.",
        type="validation-error",
        errors=errors,
    )


def _field_name(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic error dicts as ``[{"field", "message"}]``."""
    out = []
    for error in errors:
        message = str(error.get("msg", "invalid value"))
        message = message.removeprefix("Value error, ")
        out.append({"field": _field_name(error.get("loc", ())), "message": message})
    return out


def _line_and_column(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def body_not_json(body: object, errors: Sequence[Any]) -> Problem | None:
    """The problem for a request body that is not valid JSON (FastAPI's ``json_invalid`` error):
    it says so, where (line, column and character position), and names the field ``body``."""
    error = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if error is None:
        return None
    loc = error.get("loc") or ()
    position = loc[-1] if loc and isinstance(loc[-1], int) else 0
    reason = str((error.get("ctx") or {}).get("error") or "not JSON")
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body or "")
    line, column = _line_and_column(text, position)
    message = f"not valid JSON: {reason} at line {line} column {column} (character {position})"
    return Problem(
        422,
        "Request body is not valid JSON",
        f"The request body is not valid JSON: {reason} at line {line} column {column}.",
        type="validation-error",
        errors=[{"field": "body", "message": message, "line": line, "column": column, "position": position}],
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        not_json = body_not_json(exc.body, exc.errors())
        if not_json is not None:
            return problem_response(not_json, request.url.path)
        return problem_response(field_errors(validation_errors(exc.errors())), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = HTTPStatus(exc.status_code).phrase
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return problem_response(Problem(exc.status_code, title, detail, headers=headers), request.url.path)

    # Unexpected exceptions are answered by RequestContextMiddleware (shared.logs), inside the
    # request's context, so the 500 problem carries the request id.


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (Starlette's 405 names only those
    of the first route that matched the path, one of several when each method has its own)."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


def _is_validation_error_schema(content: dict[str, Any]) -> bool:
    schema = content.get("application/json", {}).get("schema", {})
    return isinstance(schema, dict) and str(schema.get("$ref", "")).endswith("/HTTPValidationError")


def document_problem_responses(operation: dict[str, Any]) -> None:
    """State an operation's error answers as what they are: problem+json (FastAPI's default
    422 schema included)."""
    parameters = operation.get("parameters", [])
    if any(p.get("in") == "query" and p.get("name") == "cursor" for p in parameters if isinstance(p, dict)):
        operation.setdefault("responses", {}).setdefault(
            "400", {"description": "The cursor is not the next_cursor of a page of this list."}
        )
    for status, response in operation.get("responses", {}).items():
        if not (str(status).startswith(("4", "5")) and isinstance(response, dict)) or "$ref" in response:
            continue
        content = response.get("content") or {}
        if _is_validation_error_schema(content):
            response["description"] = "The request is not valid; `errors` lists each bad field."
        if PROBLEM_MEDIA_TYPE not in content or _is_validation_error_schema(content):
            response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}}


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Every operation of an OpenAPI document answers its errors as problem+json."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                document_problem_responses(operation)
    return document
