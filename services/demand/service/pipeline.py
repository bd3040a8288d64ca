"""Answers of ``GET /pipeline``: a view of the latest snapshot, cached per snapshot."""

from __future__ import annotations

import json

from fastapi.encoders import jsonable_encoder
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand.pipeline import storage
from services.demand.pipeline.cells import ViewParams
from services.demand.pipeline.release import rules_of
from services.demand.pipeline.views import ViewCache, pipeline_view, view_etag
from services.demand.settings import DemandSettings
from shared.http import matches_etag


async def pipeline_answer(
    session: AsyncSession,
    params: ViewParams,
    settings: DemandSettings,
    cache: ViewCache,
    if_none_match: str | None,
) -> tuple[str, bytes | None]:
    """(ETag, body) of a view of the latest snapshot; body None when the client's copy is current."""
    rules = rules_of(settings)
    await storage.begin_consistent_read(session)
    version = await storage.latest_version(session)
    tag = view_etag(version, params, rules)
    if matches_etag(if_none_match, tag):
        return tag, None
    body = cache.get(tag)
    if body is None:
        cadence = f"{settings.pipeline_release_seconds:g} s"
        view = await pipeline_view(session, params, rules, cadence=cadence, cache=cache)
        body = json.dumps(jsonable_encoder(view), separators=(",", ":")).encode()
        cache.put(tag, body)
    return tag, body
