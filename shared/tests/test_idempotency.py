"""Idempotency-Key: a retry gets the first response; a reused key with another body is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from shared.db import Database, SessionDep
from shared.idempotency import IdempotencyDep
from shared.logs import RequestContextMiddleware
from shared.principal import Principal, PrincipalMiddleware
from shared.problems import install_problem_handlers
from shared.testing.apps import TEST_SECRET, client
from shared.tests.conftest import things

ALICE = Principal(role="anchor", subject_id="a1", actor="k1")
BOB = Principal(role="anchor", subject_id="a2", actor="k2")


@pytest.fixture
async def app(database: Database) -> AsyncIterator[FastAPI]:
    app = FastAPI()
    app.state.database = database
    install_problem_handlers(app)

    @app.post("/things", status_code=201)
    async def create(body: dict[str, str], session: SessionDep, idem: IdempotencyDep) -> JSONResponse:
        if (stored := await idem.replay(session)) is not None:
            return stored  # type: ignore[return-value]
        result = await session.execute(sa.insert(things).values(name=body["name"]).returning(things.c.id))
        thing_id = result.scalar_one()
        response = JSONResponse(
            {"id": thing_id}, status_code=201, headers={"Location": f"/things/{thing_id}"}
        )
        return await idem.remember(session, response)  # type: ignore[return-value]

    app.add_middleware(PrincipalMiddleware, secret=TEST_SECRET.encode())
    app.add_middleware(RequestContextMiddleware, access_log_enabled=False)
    yield app


async def count(database: Database) -> int:
    async with database.transaction(write=False) as session:
        return int(await session.scalar(sa.select(sa.func.count()).select_from(things)) or 0)


async def test_same_key_twice_gives_the_same_response_and_one_row(app: FastAPI, database: Database) -> None:
    async with client(app, ALICE) as http:
        first = await http.post("/things", json={"name": "a"}, headers={"Idempotency-Key": "k-1"})
        second = await http.post("/things", json={"name": "a"}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["idempotent-replayed"] == "true"
    assert await count(database) == 1


async def test_same_key_with_another_body_is_refused(app: FastAPI, database: Database) -> None:
    async with client(app, ALICE) as http:
        await http.post("/things", json={"name": "a"}, headers={"Idempotency-Key": "k-1"})
        reused = await http.post("/things", json={"name": "b"}, headers={"Idempotency-Key": "k-1"})
    assert reused.status_code == 422
    assert reused.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await count(database) == 1


async def test_keys_belong_to_their_caller(app: FastAPI, database: Database) -> None:
    async with client(app, ALICE) as alice, client(app, BOB) as bob:
        await alice.post("/things", json={"name": "a"}, headers={"Idempotency-Key": "shared"})
        theirs = await bob.post("/things", json={"name": "a"}, headers={"Idempotency-Key": "shared"})
    assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers
    assert await count(database) == 2


async def test_without_a_key_every_request_creates(app: FastAPI, database: Database) -> None:
    async with client(app, ALICE) as http:
        for _ in range(2):
            assert (await http.post("/things", json={"name": "a"})).status_code == 201
    assert await count(database) == 2


async def test_concurrent_retries_with_one_key_create_once(app: FastAPI, database: Database) -> None:
    async with client(app, ALICE) as http:
        key = {"Idempotency-Key": "race"}
        responses = await asyncio.gather(
            *(http.post("/things", json={"name": "a"}, headers=key) for _ in range(10))
        )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1  # every success is the same thing, replayed
    assert await count(database) == 1
