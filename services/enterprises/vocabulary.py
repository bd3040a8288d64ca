"""Enums and Literal types that the schemas, tables and event payloads of enterprises share."""

from __future__ import annotations

from typing import Literal

LegalForm = Literal[
    "company_limited_by_shares",
    "company_limited_by_guarantee",
    "cic_limited_by_shares",
    "cic_limited_by_guarantee",
    "cio",
    "charity",
    "cooperative_society",
    "community_benefit_society",
    "sole_trader",
    "partnership",
    "other",
]
StageName = Literal["applicant", "incubating", "tender_ready", "graduated", "withdrawn"]
SizeClass = Literal["micro", "small", "medium", "large"]
Category = Literal[
    "legal", "insurance", "policy", "accreditation", "financial", "social_value", "bidding", "digital"
]
ActorRole = Literal["enterprise", "staff", "mentor", "system"]
MilestoneStatus = Literal["not_started", "in_progress", "submitted", "verified", "rejected", "expired"]
RequestedStatus = Literal["in_progress", "submitted", "verified", "rejected"]
"""The statuses a person may ask for; ``not_started`` and ``expired`` only happen."""
GapReason = Literal["not_started", "in_progress", "submitted", "rejected", "expired", "below_threshold"]
BidRole = Literal["lead", "consortium_member", "subcontractor"]
BidStatus = Literal["intended", "submitted", "won", "lost", "withdrawn"]
BidStartStatus = Literal["intended", "submitted"]
"""The statuses a bid may be created in."""
AwardCheck = Literal["confirmed", "awaiting_outcome", "disputed", "not_awarded"]

# How the impact report breaks its figures down: by the enterprises' cohort or postcode area, or
# by the lines' anchor or CPV division.
ReportGrouping = Literal["cohort", "area", "anchor", "cpv_division"]
