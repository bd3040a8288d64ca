"""Enums and Literal types shared by the demand service's schemas, tables, rules and events."""

from __future__ import annotations

from typing import Literal, get_args

AnchorType = Literal[
    "local_authority",
    "nhs_trust",
    "university",
    "college",
    "housing_association",
    "police",
    "fire",
    "other",
]
ANCHOR_TYPES: tuple[str, ...] = get_args(AnchorType)

Category = Literal["goods", "services", "works"]
ProcurementMethod = Literal["open", "selective", "limited", "direct"]
Status = Literal["draft", "planned", "tendering", "awarded", "cancelled", "withdrawn"]
STATUSES: tuple[str, ...] = get_args(Status)
Visibility = Literal["public", "aggregate_only"]
Change = Literal["created", "updated", "imported"]  # how a version of a line came about
ImportFormat = Literal["csv", "ndjson", "ocds"]
QuarterBasis = Literal["tender", "contract_start"]  # which date a pipeline quarter is of

OPEN_STATUSES = frozenset({"planned", "tendering"})  # in the pipeline; matched
NOT_YET_TENDERING = frozenset({"draft", "planned"})  # a past tender date is refused, or makes it stale
TERMINAL_STATUSES = frozenset({"cancelled", "withdrawn"})
CREATE_STATUSES = frozenset({"draft", "planned", "tendering"})
# An award may be recorded on these (a direct award skips the tender) and corrected once awarded.
AWARDABLE_STATUSES = frozenset({"planned", "tendering", "awarded"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"planned", "cancelled", "withdrawn"}),
    "planned": frozenset({"tendering", "cancelled", "withdrawn"}),
    "tendering": frozenset({"awarded", "cancelled", "withdrawn"}),
    "awarded": frozenset(),
    "cancelled": frozenset(),
    "withdrawn": frozenset(),
}

# The enterprise stages that matching offers to anchors.
INCUBATED_STAGES = ("incubating", "tender_ready", "graduated")
