"""Matches: the lines an enterprise could bid for, the enterprises that could bid for a line."""

from __future__ import annotations

import heapq
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import cpv, events, matching, read_models, repository
from services.demand.vocabulary import OPEN_STATUSES
from shared import outbox
from shared.db import utcnow
from shared.problems import Problem


async def enterprise_matches(session: AsyncSession, enterprise_id: str, limit: int) -> list[dict[str, Any]]:
    """Public open lines the enterprise could bid for, best first."""
    enterprise = await read_models.enterprise(session, enterprise_id)
    if enterprise is None:
        raise Problem(
            404,
            "Enterprise not found",
            f"No enterprise with id {enterprise_id} is known to the demand service (yet).",
            type="not-found",
        )
    verified = (await read_models.verified_milestones(session, [enterprise_id])).get(enterprise_id, [])
    codes = enterprise["cpv_codes"] or []
    if not codes:
        return []
    now = utcnow()
    best: list[tuple[float, str, dict[str, Any], matching.Fit]] = []
    seen: set[str] = set()
    # Lines sharing a CPV group first; the wider division only when that is not enough.
    for width in (3, 2):
        prefixes = sorted({cpv.base(code)[:width] for code in codes})
        for line in await repository.candidate_lines(session, prefixes):
            if line["id"] in seen:
                continue
            seen.add(line["id"])
            found = matching.fit(enterprise, verified, line, now)
            if found is None:
                continue
            entry = (found.score, line["id"], line, found)
            if len(best) < limit:
                heapq.heappush(best, entry)
            elif entry[:2] > best[0][:2]:
                heapq.heapreplace(best, entry)
        if len(best) >= limit:
            break
    ranked = sorted(best, key=lambda e: (-e[0], e[2]["expected_tender_date"] or date.max, e[1]))
    return [
        {
            "demand_id": line["id"],
            "score": found.score,
            "gaps": found.gaps,
            "title": line["title"],
            "anchor_id": line["anchor_id"],
            "status": line["status"],
            "expected_tender_date": line["expected_tender_date"],
            "estimated_value_pence": line["estimated_value_pence"],
            "parts": found.parts,
        }
        for _, _, line, found in ranked
    ]


async def line_candidates(session: AsyncSession, line: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Incubated enterprises that could bid for a line, best first."""
    now = utcnow()
    enterprises = await read_models.incubated_enterprises(session)
    verified = await read_models.verified_milestones(session, [e["enterprise_id"] for e in enterprises])
    scored = []
    for enterprise in enterprises:
        found = matching.fit(enterprise, verified.get(enterprise["enterprise_id"], []), line, now)
        if found is not None:
            scored.append((enterprise, found))
    scored.sort(key=lambda pair: (-pair[1].score, pair[0]["name"], pair[0]["enterprise_id"]))
    return [
        {**enterprise, "score": found.score, "gaps": found.gaps, "parts": found.parts}
        for enterprise, found in scored[:limit]
    ]


async def announce_matches(session: AsyncSession, demand_id: str, version: int, limit: int) -> int:
    """``demand.match.found.v1`` for each incubated enterprise that fits a public, open line, as
    the line stands at ``version`` (an event of an older version announces nothing: the newer
    one's will). Returns how many were announced."""
    line = await repository.get_line(session, demand_id)
    if (
        line is None
        or line["version"] != version
        or line["visibility"] != "public"
        or line["status"] not in OPEN_STATUSES
        or line["stale_left_pipeline"]
    ):
        return 0
    candidates = await line_candidates(session, line, limit)
    for candidate in candidates:
        await outbox.add(session, events.match_event(line, candidate))
    return len(candidates)
