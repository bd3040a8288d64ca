"""Fixtures of the page tests: the whole system running with a small city in it.

``pages_system`` boots the system (shared.testing.system) with the pipeline published quickly;
``city`` posts the city of ``city.py`` once per session (once per xdist worker that runs a
test of this folder).

Browser tests (marker ``browser``) run only when ``-m browser`` selects them (the default run
leaves them out), see ``browser.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gateway.pages.tests.city import City, build_city
from shared.testing.databases import DatabaseFactory
from shared.testing.system import System, running_system

FAST_PUBLICATION = {
    "DEMAND_PIPELINE_POLL_SECONDS": "0.1",
    "DEMAND_PIPELINE_RELEASE_SECONDS": "0.2",  # confidential blocks too, so the city's figures settle
    "GATEWAY_PAGES_RATE_LIMIT_PER_MINUTE": "100000",
    "GATEWAY_PAGES_LINES_CACHE_SECONDS": "0",
    "GATEWAY_PAGES_ANCHORS_CACHE_SECONDS": "0",
    "GATEWAY_PAGES_LINES_PER_PAGE": "10",
}


@pytest.fixture(scope="session")
def pages_system(
    tmp_path_factory: pytest.TempPathFactory, _database_factory_sync: DatabaseFactory
) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("pages"), _database_factory_sync, env=FAST_PUBLICATION
    ) as system:
        yield system


@pytest.fixture(scope="session")
def city(pages_system: System) -> City:
    async def build() -> City:
        async with pages_system.client() as http:
            return await build_city(http)

    return asyncio.run(build())
