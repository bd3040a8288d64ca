"""Rich tables of what the gateway answers: keys, the pipeline, matches, bad import rows."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

SUPPRESSED = Text("suppressed", style="yellow italic")
HELD_BACK = Text("-", style="dim")


def pounds(pence: int | None) -> str:
    return "" if pence is None else f"£{pence / 100:,.0f}"


def share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def keys_table(items: list[dict[str, Any]]) -> Table:
    table = Table("id", "prefix", "role", "subject", "name", "created", "revoked", title="API keys")
    for key in items:
        table.add_row(
            key["id"],
            key["prefix"],
            key["role"],
            key.get("subject_id") or "",
            key["name"],
            key["created_at"][:19],
            (key.get("revoked_at") or "")[:19],
        )
    return table


def dead_letters_table(part: str, items: list[dict[str, Any]]) -> Table:
    table = Table(
        "id",
        "consumer",
        "subject",
        "event id",
        "deliveries",
        "error",
        "created",
        "replayed",
        title=f"Dead letters of {part}",
    )
    for letter in items:
        table.add_row(
            str(letter["id"]),
            letter["consumer"],
            letter["subject"],
            letter.get("event_id") or "",
            str(letter["deliveries"]),
            letter["error"],
            letter["created_at"][:19],
            (letter.get("replayed_at") or "")[:19],
        )
    return table


def pipeline_table(view: dict[str, Any]) -> Table:
    """One row per cell; a suppressed cell's figures read "suppressed" (disclosure control
    held them back so that no aggregate-only line can be recovered)."""
    dims = list(view.get("group_by") or [])
    generated = (view.get("generated_at") or "no snapshot yet")[:19]
    table = Table(
        *dims,
        "lines",
        "total value",
        "per year",
        "anchors",
        "VCSE",
        "SME",
        title=f"Pipeline (snapshot {view.get('version')}, {generated})",
        caption=" ".join(
            part
            for part in (
                f"quarters of the {view.get('quarter_of', 'tender')} date.",
                (view.get("confidential") or {}).get("note"),
            )
            if part
        ),
    )
    for column in table.columns[len(dims) :]:
        column.justify = "right"

    def figures(cell: dict[str, Any]) -> list[Any]:
        if cell.get("suppressed"):
            return [SUPPRESSED, *[HELD_BACK] * 5]
        return [
            str(cell["count"]),
            pounds(cell["total_value_pence"]),
            pounds(cell["annualised_value_pence"]),
            str(cell["anchors"]),
            share(cell["vcse_share"]),
            share(cell["sme_share"]),
        ]

    for cell in view.get("cells", []):
        key = cell.get("key", {})
        table.add_row(*[str(key.get(d, "")) for d in dims], *figures(cell))
    totals = view.get("totals")
    if totals:
        table.add_section()
        table.add_row(*(["total"] + [""] * (len(dims) - 1) if dims else []), *figures(totals), style="bold")
    return table


def matches_table(items: list[dict[str, Any]], anchors: dict[str, str]) -> Table:
    table = Table("score", "demand line", "anchor", "tender", "value", "gaps", title="Matches, best first")
    table.columns[0].justify = table.columns[4].justify = "right"
    for item in items:
        gaps = ", ".join(item.get("gaps") or []) or Text("none", style="green")
        table.add_row(
            f"{item['score']:.2f}",
            item["title"],
            anchors.get(item["anchor_id"], item["anchor_id"]),
            item.get("expected_tender_date") or "",
            pounds(item["estimated_value_pence"]),
            gaps,
        )
    return table


def bad_rows_table(problem: dict[str, Any]) -> Table:
    errors = problem.get("errors") or []
    total = problem.get("errors_total", len(errors))
    table = Table("row", "field", "problem", title=f"{total} problem(s); nothing was imported")
    for error in errors:
        table.add_row(str(error.get("row", "")), str(error.get("field", "")), str(error.get("message", "")))
    return table


def health_table(body: dict[str, Any]) -> Table:
    table = Table("part", "state", title=f"Gateway: {body.get('status') or body.get('title')}")
    for name, result in (body.get("checks") or {}).items():
        table.add_row(name, Text(result, style="green" if result == "ok" else "red"))
    return table
