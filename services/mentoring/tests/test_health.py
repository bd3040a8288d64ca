"""The mentoring service is up, ready, and refuses requests that did not come through the gateway."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from shared.testing.apps import STAFF, client


async def test_healthz_and_readyz_answer(app: FastAPI) -> None:
    async with client(app, None) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


async def test_request_without_principal_header_is_refused(app: FastAPI) -> None:
    async with client(app, None) as http:
        response = await http.get("/asyncapi.json")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_request_with_forged_principal_header_is_refused(app: FastAPI) -> None:
    async with client(app, STAFF, secret="not-the-secret-the-gateway-uses-000000") as http:
        response = await http.get("/asyncapi.json")
    assert response.status_code == 401


async def test_signed_request_is_accepted(app: FastAPI) -> None:
    async with client(app, STAFF) as http:
        response = await http.get("/asyncapi.json")
    assert response.status_code == 200
    assert response.json()["asyncapi"] == "3.0.0"


async def test_a_background_task_that_lost_a_cancellation_is_still_stopped_at_shutdown() -> None:
    from services.mentoring.app import _cancel_until_done

    lost = 0

    async def consumer_loop() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1  # what asyncio.wait_for does on 3.11 when the reply and the cancel meet

    task = asyncio.create_task(consumer_loop())
    await asyncio.sleep(0.02)
    await asyncio.wait_for(_cancel_until_done([task]), 5)
    assert task.cancelled() and lost == 1


async def test_shutdown_finds_the_runtimes_background_tasks(app: FastAPI) -> None:
    from services.mentoring.app import _background_tasks

    tasks = [task for task in _background_tasks(app.state.runtime) if task is not None]
    names = {task.get_name() for task in tasks}
    assert "consumer-mentoring-enterprises" in names and "outbox-relay" in names
    assert "job-session-reminders" in names
