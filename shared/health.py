"""``/healthz`` (the process is alive) and ``/readyz`` (its dependencies answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from shared.problems import Problem, problem_response

ReadinessCheck = Callable[[], Awaitable[object]]
Checks = Callable[[], Mapping[str, ReadinessCheck]]


async def run_checks(checks: Mapping[str, ReadinessCheck], timeout: float = 2.0) -> dict[str, str]:
    """Run every check concurrently; ``{"name": "ok" | "<error>"}``."""

    async def one(check: ReadinessCheck) -> str:
        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g}s"
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return "ok"

    names = list(checks)
    results = await asyncio.gather(*(one(checks[name]) for name in names))
    return dict(zip(names, results, strict=True))


def readiness_response(required: dict[str, str], optional: dict[str, str] | None = None) -> JSONResponse:
    """200 when every required check passed (``degraded`` if an optional one failed), else 503."""
    optional = optional or {}
    checks = {**required, **optional}
    failing = [name for name, result in required.items() if result != "ok"]
    if failing:
        return problem_response(
            Problem(
                503,
                "Not ready",
                "Not reachable: " + ", ".join(failing) + ".",
                type="not-ready",
                checks=checks,
            ),
            "/readyz",
        )
    degraded = any(result != "ok" for result in optional.values())
    return JSONResponse({"status": "degraded" if degraded else "ready", "checks": checks})


def health_router(required: Checks, optional: Checks | None = None) -> APIRouter:
    """Health routes; the check maps are built per request (they exist only after startup)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Every dependency is reachable", response_model=None)
    async def readyz() -> JSONResponse:
        results = await run_checks({**required(), **(optional() if optional else {})})
        required_names = set(required())
        return readiness_response(
            {k: v for k, v in results.items() if k in required_names},
            {k: v for k, v in results.items() if k not in required_names},
        )

    return router
