"""The impact report: the facts it counts, read from this service's own tables.

Everything here was kept from events (bids recorded here; demand lines and their awards from
the demand service's events; completed mentoring sessions from the mentoring service's), each
copy stored only when its version is newer, so a report read at any moment counts every event
once however late or often it arrived. The reads are the report's own: no other use case needs
these shapes.
"""

from __future__ import annotations

import uuid
from datetime import date

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import impact
from services.enterprises.models import bids, cohorts, demand_lines, enterprises, history, mentoring_sessions
from services.enterprises.schemas import ImpactFigures, ImpactGroup, ImpactQuery, ImpactReport, WonFrom
from shared import cpv
from shared.db import utcnow
from shared.downloads import csv_text
from shared.problems import Problem

TENDER_READY = "tender_ready"


def postcode_area(postcode: str) -> str:
    """``"LS6 2QR"`` -> ``"LS"``: the letters before the first digit."""
    letters = ""
    for char in postcode:
        if char.isdigit():
            break
        letters += char
    return letters.strip().upper()


async def _enterprise_facts(session: AsyncSession) -> list[impact.EnterpriseFact]:
    rows = (
        await session.execute(
            sa.select(
                enterprises.c.id,
                enterprises.c.cohort_id,
                enterprises.c.postcode,
                enterprises.c.created_at,
                cohorts.c.start_date,
            ).select_from(enterprises.outerjoin(cohorts, cohorts.c.id == enterprises.c.cohort_id))
        )
    ).all()
    ready_on = await _first_tender_ready(session)
    return [
        impact.EnterpriseFact(
            enterprise_id=r.id,
            cohort_id=r.cohort_id,
            area=postcode_area(r.postcode),
            joined=r.start_date or r.created_at.date(),
            tender_ready_on=ready_on.get(r.id),
        )
        for r in rows
    ]


async def _first_tender_ready(session: AsyncSession) -> dict[uuid.UUID, date]:
    """When each enterprise first reached tender_ready, from its history."""
    rows = (
        await session.execute(
            sa.select(history.c.enterprise_id, history.c.at, history.c.changes)
            .where(history.c.action.in_(("registered", "stage_changed")))
            .order_by(history.c.id)
        )
    ).all()
    first: dict[uuid.UUID, date] = {}
    for row in rows:
        stage = (row.changes or {}).get("stage")
        reached = stage.get("to") if isinstance(stage, dict) else stage
        if reached == TENDER_READY and row.enterprise_id not in first:
            first[row.enterprise_id] = row.at.date()
    return first


async def _line_facts(session: AsyncSession) -> list[impact.LineFact]:
    rows = (await session.execute(sa.select(demand_lines).where(demand_lines.c.withdrawn.is_(False)))).all()
    return [
        impact.LineFact(
            demand_id=r.demand_id,
            anchor_id=r.anchor_id,
            value_pence=r.estimated_value_pence,
            cpv_division=cpv.division(r.cpv_codes[0]) if r.cpv_codes else None,
            published_on=r.first_published_at.date() if r.first_published_at else None,
            awarded_enterprise_id=r.awarded_enterprise_id,
            awarded_on=r.awarded_on,
        )
        for r in rows
    ]


async def _bid_facts(session: AsyncSession) -> list[impact.BidFact]:
    rows = (await session.execute(sa.select(bids))).all()
    return [
        impact.BidFact(
            enterprise_id=r.enterprise_id,
            demand_id=r.demand_id,
            status=r.status,
            submitted_on=r.submitted_at.date() if r.submitted_at else None,
            decided_at=r.decided_at,
            contract_value_pence=r.contract_value_pence,
            award_check=r.award_check,
        )
        for r in rows
    ]


async def _session_facts(session: AsyncSession) -> list[impact.SessionFact]:
    rows = (await session.execute(sa.select(mentoring_sessions))).all()
    return [
        impact.SessionFact(
            enterprise_id=r.enterprise_id,
            completed_at=r.completed_at,
            hours=(r.ends_at - r.starts_at).total_seconds() / 3600,
            milestone_linked=bool(r.milestone_code or r.signed_off_milestones),
        )
        for r in rows
    ]


async def _check_cohort(session: AsyncSession, cohort_id: uuid.UUID | None) -> None:
    if cohort_id is None:
        return
    if (await session.execute(sa.select(cohorts.c.id).where(cohorts.c.id == cohort_id))).first() is None:
        raise Problem(
            422,
            "Unknown cohort",
            f"No cohort {cohort_id}.",
            type="validation",
            errors=[{"field": "cohort_id", "message": "no such cohort"}],
        )


async def impact_report(session: AsyncSession, query: ImpactQuery) -> ImpactReport:
    await _check_cohort(session, query.cohort_id)
    facts = impact.Facts(
        enterprises=await _enterprise_facts(session),
        lines=await _line_facts(session),
        bids=await _bid_facts(session),
        sessions=await _session_facts(session),
    )
    scope = impact.Scope(
        start=query.start,
        end=query.end,
        cohort_id=query.cohort_id,
        area=query.area,
        anchor_id=query.anchor_id,
        cpv_division=query.cpv_division,
    )
    result = impact.report(facts, scope, query.group_by, shareable=query.shareable)
    labels = await _labels(session, query.group_by)
    return ImpactReport(
        generated_at=utcnow(),
        query=query,
        totals=_figures(result.totals),
        groups=[
            ImpactGroup(by=g.by, key=g.key, label=labels.get(g.key or ""), figures=_figures(g.figures))
            for g in result.groups
        ],
        won_from=[
            WonFrom(anchor_id=w.anchor_id, wins=w.wins, value_won_pence=w.value_won_pence)
            for w in result.won_from
        ],
        won_from_withheld=result.withheld_won_from,
        notes=_notes(query),
    )


async def _labels(session: AsyncSession, group_by: str | None) -> dict[str, str]:
    """The names of the groups' keys where there are names (cohorts, CPV divisions)."""
    if group_by == "cohort":
        rows = (await session.execute(sa.select(cohorts.c.id, cohorts.c.name))).all()
        return {str(r.id): r.name for r in rows}
    return dict(cpv.DIVISION_NAMES) if group_by == "cpv_division" else {}


FIGURE_NAMES = [name for name in ImpactFigures.model_fields if name != "withheld"]


def impact_csv(report: ImpactReport) -> str:
    """The totals and each group as rows, one column per figure (empty when withheld or when it
    does not apply) and the withheld ones named."""
    scopes = [("total", None, None, report.totals)]
    scopes += [(g.by, g.key, g.label, g.figures) for g in report.groups]
    return csv_text(
        ["group", "key", "label", *FIGURE_NAMES, "withheld"],
        (
            [by, key, label, *(getattr(figures, name) for name in FIGURE_NAMES), " ".join(figures.withheld)]
            for by, key, label, figures in scopes
        ),
    )


def _figures(figures: impact.Figures) -> ImpactFigures:
    return ImpactFigures(**figures.values, withheld=figures.withheld)


def _notes(query: ImpactQuery) -> list[str]:
    notes = [
        "Public demand lines only: an aggregate-only line never leaves the demand service.",
        "A win is a bid its enterprise recorded as won: wins_confirmed counts those the anchor's "
        "award names too, wins_disputed those whose award names another supplier; "
        "awards_unrecorded counts awards to an enterprise that has not recorded the win.",
    ]
    if query.shareable:
        notes.append(
            f"Shareable: figures from bids of fewer than {impact.MIN_ENTERPRISES} enterprises are "
            "withheld (listed in withheld), and one more group where one alone would be."
        )
    return notes
