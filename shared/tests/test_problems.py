"""Every error is RFC 9457 problem+json; validation errors name each bad field."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, Field

from shared.logs import RequestContextMiddleware
from shared.problems import Problem, install_problem_handlers
from shared.testing.apps import client


class Line(BaseModel):
    title: str = Field(min_length=1)
    value_pence: int = Field(ge=0)


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/lines")
    async def create(line: Line) -> Line:
        return line

    @app.get("/conflict")
    async def conflict() -> None:
        raise Problem(409, "Conflict", "The slot is taken.", type="slot-taken", session_id="s1")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.get("/stored")
    async def stored() -> Line:
        # A row that no longer fits its response model: the server's fault, not the request's.
        return Line.model_validate({"title": "A line", "internal_cost_column": 1})

    app.add_middleware(RequestContextMiddleware, access_log_enabled=False)
    return app


async def test_validation_errors_list_each_field() -> None:
    async with client(make_app(), None) as http:
        response = await http.post("/lines", json={"title": "", "value_pence": -1})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422 and body["title"]
    assert {e["field"] for e in body["errors"]} == {"title", "value_pence"}
    assert all(e["message"] for e in body["errors"])


async def test_domain_problem_keeps_its_extension_members() -> None:
    async with client(make_app(), None) as http:
        response = await http.get("/conflict", headers={"X-Request-ID": "req-123"})
    body = response.json()
    assert response.status_code == 409
    assert body["type"].endswith("/slot-taken")
    assert body["session_id"] == "s1"
    assert body["request_id"] == "req-123" == response.headers["x-request-id"]


async def test_unknown_route_and_unexpected_error_are_problems_without_internals() -> None:
    async with client(make_app(), None) as http:
        missing = await http.get("/nowhere")
        boom = await http.get("/boom")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert boom.status_code == 500 and "secret internals" not in boom.text
    assert boom.json()["request_id"] == boom.headers["x-request-id"]


async def test_a_model_that_fails_inside_the_server_is_a_500_naming_no_field() -> None:
    async with client(make_app(), None) as http:
        response = await http.get("/stored")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "value_pence" not in response.text and "errors" not in response.json()


async def test_a_malformed_json_body_is_named_body_and_located() -> None:
    async with client(make_app(), None) as http:
        response = await http.post(
            "/lines",
            content=b'{"title": "Meals",\n "value_pence": 12,,\n}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "Request body is not valid JSON"
    assert "not valid JSON" in body["detail"] and "line 2 column 20" in body["detail"]
    assert body["errors"] == [
        {
            "field": "body",
            "message": "not valid JSON: Expecting property name enclosed in double quotes "
            "at line 2 column 20 (character 38)",
            "line": 2,
            "column": 20,
            "position": 38,
        }
    ]


async def test_a_405_names_every_method_of_the_path_in_allow() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/things/{thing_id}")
    async def read(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @app.patch("/things/{thing_id}")
    async def change(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @app.delete("/things/{thing_id}", status_code=204)
    async def remove(thing_id: int) -> None:
        return None

    async with client(app, None) as http:
        options = await http.options("/things/1")
        put = await http.put("/things/1")
    for answer in (options, put):
        assert answer.status_code == 405
        assert answer.headers["content-type"] == "application/problem+json"
        assert set(answer.headers["allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
