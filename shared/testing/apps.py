"""Running a service app in-process for tests, and calling it as a given principal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from shared.principal import Principal, PrincipalAuth

TEST_SECRET = "test-internal-secret-of-at-least-32-characters"
STAFF = Principal(role="staff", subject_id=None, actor="test-staff")


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    """Run the app's lifespan (database, NATS, relay, consumers) around a block."""
    async with app.router.lifespan_context(app):
        yield app


def client(
    app: FastAPI, principal: Principal | None = STAFF, *, secret: str = TEST_SECRET
) -> httpx.AsyncClient:
    """An httpx client calling ``app`` in-process, signed as ``principal`` (None: unsigned)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://service",
        auth=PrincipalAuth(secret.encode(), principal) if principal is not None else None,
    )
