"""A synthetic city anchor network: who and what the demo loads, made from a seed.

Pure data, no HTTP: the same seed and the same quarter give the same network, so loading
it twice changes nothing. Every name is invented for the city of Calder (a city that does
not exist) and carries a "(demo)" label; email addresses are under ``example.org``, the
domain kept for examples. Quarters start at the quarter of ``today``: the demo's demand
always lies ahead. (A little over 500 lines: the city's data, read as one description.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

LABEL = " (demo)"
ALL_STATUSES = "draft,planned,tendering,awarded,cancelled,withdrawn"  # a line's, for GET /demand
QUARTERS = 8

# (short code, name, type, annual third-party spend in GBP millions)
ANCHORS: tuple[tuple[str, str, str, int], ...] = (
    ("CCC", "Calder City Council", "local_authority", 620),
    ("CTH", "Calder Teaching Hospitals NHS Trust", "nhs_trust", 410),
    ("CCH", "Calder Community Healthcare NHS Trust", "nhs_trust", 95),
    ("CAMH", "Calder and Aire Mental Health NHS Trust", "nhs_trust", 70),
    ("UOC", "University of Calder", "university", 210),
    ("CMU", "Calder Metropolitan University", "university", 120),
    ("CCOL", "Calder City College", "college", 28),
    ("CHHA", "Calder Homes Housing Association", "housing_association", 160),
    ("CPOL", "Calder Police", "police", 85),
    ("CFRS", "Calder Fire and Rescue Service", "fire", 22),
    ("CCA", "Calder Combined Authority", "other", 240),
    ("CCF", "Calder Community Foundation", "other", 18),
)
# The trusts send what they already publish: OCDS planning releases.
OCDS_ANCHOR_TYPES = frozenset({"nhs_trust"})

# Twenty CPV divisions, each with codes and what an anchor buys under them: (code, title, category).
DEMAND_KINDS: dict[str, list[tuple[str, str, str]]] = {
    "03": [("03121000", "Bedding plants and cut flowers for public spaces", "goods")],
    "09": [("09310000", "Renewable electricity supply", "goods")],
    "15": [("15800000", "Locally produced food for kitchens", "goods")],
    "18": [("18100000", "Uniforms and workwear", "goods")],
    "22": [("22100000", "Printed leaflets and public information", "goods")],
    "30": [("30200000", "Refurbished laptops and desktops", "goods")],
    "33": [("33140000", "Medical consumables", "goods")],
    "39": [("39100000", "Reused and remanufactured furniture", "goods")],
    "45": [
        ("45453000", "Retrofit and refurbishment of buildings", "works"),
        ("45233000", "Footpath and cycleway works", "works"),
    ],
    "50": [("50700000", "Repairs and maintenance of building installations", "services")],
    "55": [
        ("55524000", "School catering", "services"),
        ("55520000", "Community catering for day centres", "services"),
    ],
    "60": [("60130000", "Community transport and accessible journeys", "services")],
    "72": [("72200000", "Software development and digital services", "services")],
    "77": [("77310000", "Grounds maintenance and planting", "services")],
    "79": [
        ("79340000", "Advertising and engagement campaigns", "services"),
        ("79530000", "Translation and interpreting", "services"),
    ],
    "80": [("80500000", "Training courses and apprenticeships", "services")],
    "85": [
        ("85312000", "Social care without accommodation", "services"),
        ("85323000", "Community health services", "services"),
    ],
    "90": [
        ("90910000", "Cleaning services", "services"),
        ("90500000", "Waste collection and recycling", "services"),
    ],
    "92": [("92300000", "Arts and cultural programmes", "services")],
    "98": [("98300000", "Laundry and community support services", "services")],
}
PRIORITIES = ("Jobs", "Growth", "Social", "Environment", "Innovation")
AREAS = (
    ("Calder city centre", ["LS"], ["LS1", "LS2"]),
    ("North Calder", ["LS"], ["LS6", "LS7", "LS17"]),
    ("East Calder", ["LS"], ["LS9", "LS14"]),
    ("Calder and Aire", ["LS", "BD"], []),
    ("Aire valley", ["BD"], ["BD1", "BD3"]),
    ("Across the region", ["LS", "BD", "WF", "HX"], []),
)
REQUIREMENTS_BY_CATEGORY = {
    "goods": [("legal_entity", None), ("financial_standing", None)],
    "services": [
        ("legal_entity", None),
        ("public_liability_insurance", 500_000_000),
        ("employers_liability_insurance", 500_000_000),
        ("safeguarding_policy", None),
        ("data_protection", None),
        ("social_value_offer", None),
    ],
    "works": [
        ("legal_entity", None),
        ("public_liability_insurance", 1_000_000_000),
        ("health_safety_policy", None),
        ("iso_certifications", None),
        ("carbon_reduction_plan", None),
    ],
}

ENTERPRISE_WORDS = (
    "Green Shoots", "Common Ground", "Open Door", "Kindred", "Northern Light", "Riverside", "Good Work",
    "Fresh Start", "Hearth", "Brightside", "Millstone", "Beacon", "Tandem", "Harvest", "Weaver's Yard",
    "Second Chance", "Roots", "Lantern", "Circle", "New Leaf",
)  # fmt: skip
# (trade, CPV codes it supplies)
TRADES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Catering", ("55524000", "55520000", "15800000")),
    ("Kitchens", ("55520000", "15800000")),
    ("Cleaning", ("90910000", "98300000")),
    ("Recycling", ("90500000", "39100000")),
    ("Digital", ("72200000", "30200000")),
    ("Retrofit", ("45453000", "50700000", "09310000")),
    ("Grounds", ("77310000", "03121000")),
    ("Transport", ("60130000",)),
    ("Care", ("85312000", "85323000")),
    ("Training", ("80500000",)),
    ("Print", ("22100000", "79340000")),
    ("Arts", ("92300000",)),
    ("Language Services", ("79530000",)),
    ("Workwear", ("18100000",)),
    ("Furniture", ("39100000",)),
)
# (legal form, name suffix, registration number shape)
LEGAL_FORMS: tuple[tuple[str, str, str], ...] = (
    ("cic_limited_by_guarantee", "CIC", "company"),
    ("cic_limited_by_shares", "CIC", "company"),
    ("cio", "CIO", "charity"),
    ("charity", "Trust", "charity"),
    ("cooperative_society", "Co-operative", "society"),
    ("community_benefit_society", "Community Benefit Society", "society"),
    ("company_limited_by_guarantee", "Ltd", "company"),
    ("company_limited_by_shares", "Ltd", "company"),
    ("sole_trader", "", ""),
    ("partnership", "LLP", "partnership"),
)
POSTCODES = (
    "LS1 4AP", "LS2 7EY", "LS6 2QR", "LS7 3JB", "LS9 8AG", "LS11 5DR", "LS12 3BE", "LS14 6NU",
    "LS17 5LH", "BD1 4HQ", "BD3 9LT", "WF1 2EB", "HX1 1RE",
)  # fmt: skip
COHORTS: tuple[tuple[str, str, date, date], ...] = (
    ("Calder Start-up Cohort 2026 (demo)", "Social enterprise start-up", date(2026, 1, 12),
     date(2026, 12, 18)),
    ("Calder Tender Ready Cohort 2026 (demo)", "Tender readiness", date(2026, 4, 13), date(2027, 3, 26)),
    ("Calder Scale-up Cohort 2027 (demo)", "Growth and public contracts", date(2027, 1, 11),
     date(2027, 12, 17)),
)  # fmt: skip
# Milestones an enterprise works through, roughly in order.
READINESS_PATH = (
    "legal_entity",
    "equality_diversity_policy",
    "data_protection",
    "financial_standing",
    "public_liability_insurance",
    "employers_liability_insurance",
    "health_safety_policy",
    "safeguarding_policy",
    "social_value_offer",
    "case_studies",
    "cyber_essentials",
    "cdp_registration",
    "exclusions_declaration",
)
LAPSING = frozenset({"public_liability_insurance", "employers_liability_insurance", "cyber_essentials"})

MENTOR_NAMES = (
    "Amira Hussain", "Ben Okafor", "Catherine Doyle", "Dev Patel", "Eleanor Whitaker", "Farid Rahman",
    "Grace Mensah", "Harry Lindqvist", "Imogen Clarke", "Jamal Ahmed", "Kirsty Macleod", "Liam Byrne",
    "Maya Kowalski", "Nadia Ali", "Owen Price", "Priya Sharma", "Rosa Martinez", "Sam Greenwood",
    "Tariq Mahmood", "Uma Reddy",
)  # fmt: skip
EXPERTISE = (
    ("legal", "legal_entity", "exclusions_declaration"),
    ("insurance", "public_liability_insurance", "employers_liability_insurance"),
    ("policy", "safeguarding_policy", "health_safety_policy", "equality_diversity_policy"),
    ("financial", "financial_standing"),
    ("social_value", "social_value_offer"),
    ("bidding", "case_studies", "cdp_registration"),
    ("digital", "cyber_essentials", "data_protection"),
    ("accreditation", "iso_certifications", "carbon_reduction_plan"),
)
TOPICS = (
    "Writing a social value offer",
    "Pricing a first tender",
    "Insurance for contracts",
    "Safeguarding policy review",
    "Finding pipeline opportunities",
)
DEMO_TOPIC = "(demo)"  # ends the topic of every session the demo books


@dataclass(frozen=True)
class Anchor:
    ref: str  # how the rest of the network names it
    body: dict[str, Any]


@dataclass(frozen=True)
class Line:
    anchor: str
    route: str  # "post", "csv" or "ocds": how the anchor sends it
    body: dict[str, Any]  # the fields of POST /demand, external_ref included


@dataclass(frozen=True)
class MilestoneStep:
    code: str
    status: str  # "in_progress", "submitted" or "verified"
    value_pence: int | None = None
    expires_in_days: int | None = None  # for a verified one that lapses


@dataclass(frozen=True)
class Enterprise:
    ref: str
    body: dict[str, Any]  # POST /enterprises, cohort named by "cohort" until loaded
    milestones: tuple[MilestoneStep, ...]


@dataclass(frozen=True)
class Mentor:
    ref: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Booking:
    mentor: str
    enterprise: str
    topic: str
    milestone_code: str | None
    days_ahead: int  # the first free slot from this many days on
    complete: bool = False  # run now and completed, signing off ``milestone_code``


@dataclass(frozen=True)
class Bid:
    enterprise: str
    line: str  # the line's external_ref
    role: str
    partners: tuple[str, ...]
    outcome: str  # "intended", "submitted", "won" or "lost"
    value_pence: int | None  # the award's contract value (won or lost: the anchor awarded the line)


@dataclass
class Network:
    seed: int
    first_quarter: tuple[int, int]
    anchors: list[Anchor] = field(default_factory=list)
    cohorts: list[dict[str, Any]] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    enterprises: list[Enterprise] = field(default_factory=list)
    mentors: list[Mentor] = field(default_factory=list)
    bookings: list[Booking] = field(default_factory=list)
    bids: list[Bid] = field(default_factory=list)
    featured: dict[str, str] = field(default_factory=dict)  # role -> ref of the subject its key acts for


def quarter_of(day: date) -> tuple[int, int]:
    return day.year, (day.month - 1) // 3 + 1


def quarter_start(year: int, quarter: int, offset: int) -> date:
    index = year * 4 + quarter - 1 + offset
    return date(index // 4, index % 4 * 3 + 1, 1)


def build_network(seed: int, today: date) -> Network:
    """The whole network for ``seed``, its demand in the eight quarters from ``today``'s."""
    rng = random.Random(seed)
    network = Network(seed=seed, first_quarter=quarter_of(today))
    _anchors(network)
    network.cohorts = [
        {"name": name, "programme": programme, "start_date": start.isoformat(), "end_date": end.isoformat()}
        for name, programme, start, end in COHORTS
    ]
    _lines(network, rng)
    _enterprises(network, rng)
    _mentors(network, rng)
    _bookings(network, rng)
    _bids(network, rng)
    return network


def _anchors(network: Network) -> None:
    for ref, name, kind, spend_millions in ANCHORS:
        network.anchors.append(
            Anchor(
                ref,
                {
                    "name": name + LABEL,
                    "type": kind,
                    "annual_third_party_spend_pence": spend_millions * 100_000_000,
                },
            )
        )
    network.featured["anchor"] = network.anchors[0].ref


def _lines(network: Network, rng: random.Random) -> None:
    divisions = sorted(DEMAND_KINDS)
    year, quarter = network.first_quarter
    per_anchor = [52, 48, 30, 26, 38, 30, 22, 40, 30, 20, 40, 24]  # 400 in all; the big buyers post more
    for anchor, count in zip(network.anchors, per_anchor, strict=True):
        anchor_type = anchor.body["type"]
        favoured = rng.sample(divisions, 8)
        for n in range(count):
            division = rng.choice(favoured) if rng.random() < 0.75 else rng.choice(divisions)
            code, title, category = rng.choice(DEMAND_KINDS[division])
            tender_quarter = rng.randrange(QUARTERS)
            tender = quarter_start(year, quarter, tender_quarter) + timedelta(days=rng.randrange(0, 85))
            start = tender + timedelta(days=rng.choice((60, 90, 120, 150)))
            scale = rng.choice((0.03, 0.08, 0.15, 0.4, 1.0, 2.5, 6.0))
            value = int(rng.uniform(20_000, 400_000) * scale) * 100  # pence, whole pounds
            small = value <= 50_000_000  # up to 500,000 GBP: in reach of a small supplier
            area, postcode_areas, districts = rng.choice(AREAS)
            requirements = [
                {"code": c, "min_value_pence": v}
                for c, v in REQUIREMENTS_BY_CATEGORY[category]
                if rng.random() < 0.6 or c == "legal_entity"
            ]
            status = "tendering" if tender_quarter == 0 and rng.random() < 0.4 else "planned"
            if tender_quarter == 0:
                # Its tender date may have passed already this quarter, and the API refuses a past
                # tender date for a planned line: the current quarter's lines are out to tender.
                status = "tendering"
            body: dict[str, Any] = {
                "external_ref": f"{anchor.ref}-{year}-{n + 1:03d}",
                "title": f"{title}{LABEL}",
                "description": f"{title} for {anchor.body['name'].removesuffix(LABEL)}, {area.lower()}. "
                "Synthetic demo data.",
                "cpv_codes": [code],
                "estimated_value_pence": value,
                "category": category,
                "procurement_method": "open"
                if value > 20_000_000
                else rng.choice(("open", "selective", "direct")),
                "expected_tender_date": tender.isoformat(),
                "contract_start": start.isoformat(),
                "duration_months": rng.choice((12, 24, 36, 48)),
                "suitable_for_sme": small or rng.random() < 0.3,
                "suitable_for_vcse": small and rng.random() < 0.8,
                "reprocurement": rng.random() < 0.35,
                "status": status,
                "visibility": "public",
                "requirements": requirements,
                "social_value_priorities": rng.sample(PRIORITIES, rng.randint(1, 3)),
                "delivery_area": {
                    "label": area,
                    "postcode_areas": postcode_areas,
                    "postcode_districts": districts,
                },
            }
            route = "ocds" if anchor_type in OCDS_ANCHOR_TYPES else "csv"
            if n < 3:
                route = "post"  # each anchor posts a few lines one by one
            elif route == "csv" and rng.random() < 0.11:
                body["visibility"] = "aggregate_only"  # shared only inside pipeline figures
            elif route == "csv" and n == count - 1:
                body["status"] = "draft"
            network.lines.append(Line(anchor.ref, route, body))


def _registration(shape: str, rng: random.Random) -> str | None:
    if shape == "company":
        return f"{rng.randrange(10_000_000, 15_999_999):08d}"
    if shape == "charity":
        return str(rng.randrange(1_100_000, 1_209_999))
    if shape == "society":
        return f"{rng.randrange(10_000, 39_999)}R"
    if shape == "partnership":
        return f"OC{rng.randrange(300_000, 449_999)}"
    return None


def _enterprises(network: Network, rng: random.Random) -> None:
    names: set[str] = set()
    for n in range(60):
        trade, supplies = TRADES[n % len(TRADES)]
        form, suffix, shape = LEGAL_FORMS[rng.randrange(len(LEGAL_FORMS))]
        while True:
            base = f"{rng.choice(ENTERPRISE_WORDS)} {trade}"
            if base not in names:
                names.add(base)
                break
        employees = rng.choice((0, 1, 2, 3, 4, 6, 9, 12, 18, 25, 40, 65))
        turnover = int((employees + 1) * rng.uniform(25_000, 60_000)) * 100
        stage = rng.choices(("applicant", "incubating", "graduated"), weights=(2, 7, 1))[0]
        cpv_codes = rng.sample(supplies, rng.randint(1, len(supplies)))
        body = {
            "name": f"{base} {suffix}".strip() + LABEL,
            "legal_form": form,
            "registration_number": _registration(shape, rng),
            "postcode": rng.choice(POSTCODES),
            "cpv_codes": cpv_codes,
            "max_contract_value_pence": rng.choice((5_000_000, 25_000_000, 100_000_000, 500_000_000)),
            "employees": employees,
            "turnover_pence": turnover,
            "vcse": form not in ("company_limited_by_shares", "sole_trader", "partnership"),
            "handles_personal_data": trade in ("Care", "Digital", "Training", "Language Services")
            or rng.random() < 0.3,
            "works_with_public": trade not in ("Print", "Workwear", "Furniture"),
            "works_with_vulnerable_people": trade in ("Care", "Transport", "Training"),
            "provides_professional_advice": trade in ("Digital", "Language Services"),
            "description": f"{trade.lower()} social enterprise in Calder. Synthetic demo data.",
            "stage": "incubating" if stage == "graduated" else stage,
            "cohort": network.cohorts[n % len(network.cohorts)]["name"] if stage != "applicant" else None,
        }
        progress = rng.randint(0, len(READINESS_PATH)) if stage != "applicant" else rng.randint(0, 2)
        steps = []
        for i, code in enumerate(READINESS_PATH[:progress]):
            value = 500_000_000 if code.endswith("_insurance") else None
            if i == progress - 1 and rng.random() < 0.5:
                steps.append(MilestoneStep(code, "submitted", value))
            elif code in LAPSING:
                steps.append(MilestoneStep(code, "verified", value, rng.choice((12, 25, 200, 300))))
            else:
                steps.append(MilestoneStep(code, "verified", value))
        if progress < len(READINESS_PATH) and rng.random() < 0.4:
            steps.append(MilestoneStep(READINESS_PATH[progress], "in_progress"))
        network.enterprises.append(Enterprise(f"E{n + 1:02d}", body, tuple(steps)))
    # The walkthrough's enterprise: catering (school meals are the pipeline's commonest line), a
    # few milestones verified, its public liability insurance submitted for a mentor to sign off.
    featured = Enterprise(
        "E00",
        {
            "name": "Green Shoots Catering CIC" + LABEL,
            "legal_form": "cic_limited_by_guarantee",
            "registration_number": "12345678",
            "postcode": "LS6 2QR",
            "cpv_codes": ["55524000", "55520000"],
            "max_contract_value_pence": 50_000_000,
            "employees": 8,
            "turnover_pence": 42_000_000,
            "vcse": True,
            "handles_personal_data": True,
            "works_with_public": True,
            "works_with_vulnerable_people": True,
            "description": "Cooks fresh school and community meals. Synthetic demo data.",
            "stage": "incubating",
            "cohort": network.cohorts[1]["name"],
        },
        (
            MilestoneStep("legal_entity", "verified"),
            MilestoneStep("equality_diversity_policy", "verified"),
            MilestoneStep("data_protection", "verified"),
            MilestoneStep("employers_liability_insurance", "verified", 500_000_000, 20),
            MilestoneStep("public_liability_insurance", "submitted", 500_000_000),
            MilestoneStep("safeguarding_policy", "in_progress"),
        ),
    )
    network.enterprises.insert(0, featured)
    network.featured["enterprise"] = featured.ref


def _weekly(rng: random.Random) -> list[dict[str, Any]]:
    days = sorted(rng.sample(range(5), rng.randint(2, 4)))
    start = rng.choice(("09:00", "09:30", "10:00", "13:00"))
    end = {"09:00": "12:30", "09:30": "16:00", "10:00": "17:00", "13:00": "17:30"}[start]
    return [{"weekday": day, "start": start, "end": end} for day in days]


def _mentors(network: Network, rng: random.Random) -> None:
    anchors = [a.body["name"].removesuffix(LABEL) for a in network.anchors]
    for n, name in enumerate(MENTOR_NAMES):
        areas = rng.sample(EXPERTISE, rng.randint(1, 3))
        expertise = list(dict.fromkeys(tag for area in areas for tag in area))
        organisation = rng.choice([*anchors[:6], "Calder Social Enterprise Network", "Independent"])
        body = {
            "name": name,
            "email": f"{name.lower().replace(' ', '.')}@mentors.example.org",
            "organisation": f"{organisation}{LABEL}",
            "bio": f"Mentors on {', '.join(a[0].replace('_', ' ') for a in areas)}. Synthetic demo data.",
            "expertise": expertise,
            "timezone": "Europe/London",
            "session_lengths_minutes": [30, 60],
            "max_active_mentees": rng.choice((4, 6, 8)),
            "availability": {
                "timezone": "Europe/London",
                "weekly": _weekly(rng),
                "minimum_notice_minutes": 24 * 60,
                "buffer_after_minutes": 15,
                "booking_horizon_days": 120,
            },
        }
        network.mentors.append(Mentor(f"M{n + 1:02d}", body))
    network.featured["mentor"] = network.mentors[0].ref


def _bookings(network: Network, rng: random.Random) -> None:
    mentors = network.mentors
    featured = network.enterprises[0]
    # The featured mentor is booked by the featured enterprise about its submitted insurance.
    network.bookings.append(
        Booking(mentors[0].ref, featured.ref, "Public liability cover for school kitchens", None, 3)
    )
    incubating = [e for e in network.enterprises[1:] if e.body["stage"] == "incubating"]
    for n, enterprise in enumerate(rng.sample(incubating, 14)):
        mentor = mentors[(n + 1) % len(mentors)]
        submitted = [s.code for s in enterprise.milestones if s.status == "submitted"]
        if submitted and n < 6:
            # Run now, completed, signing off what the enterprise submitted.
            network.bookings.append(
                Booking(
                    mentor.ref,
                    enterprise.ref,
                    f"Review of {submitted[0].replace('_', ' ')}",
                    submitted[0],
                    0,
                    True,
                )
            )
        else:
            topic = rng.choice(TOPICS)
            network.bookings.append(Booking(mentor.ref, enterprise.ref, topic, None, rng.randint(2, 20)))


# Who won the lines an incubated enterprise lost, and the partners of consortium bids.
OTHER_SUPPLIER = "Calder Facilities Services Ltd (demo)"
PARTNERS = ("Northern Catering Co-operative", "Aire Valley Cleaning CIC", "Pennine Print Ltd")
OUTCOMES = ("won", "won", "lost", "submitted", "won", "intended", "lost", "submitted")


def _bids(network: Network, rng: random.Random) -> None:
    """Sixteen incubated enterprises each bid on one open public line; most outcomes are in (the
    anchor awarded the line, to the enterprise or to another supplier), so the impact report has
    wins, losses and bids still open."""
    # Lines posted one by one: an import sent again on a later load would set an awarded line's
    # status back, a posted line is only looked up.
    open_lines = [
        line
        for line in network.lines
        if line.route == "post"
        and line.body["visibility"] == "public"
        and line.body["status"] in ("planned", "tendering")
    ]
    bidders = [e for e in network.enterprises[1:] if e.body["stage"] == "incubating" and e.body["cohort"]]
    decided: set[str] = set()
    for n, enterprise in enumerate(rng.sample(bidders, min(16, len(bidders)))):
        line = rng.choice([line for line in open_lines if line.body["external_ref"] not in decided])
        outcome = OUTCOMES[n % len(OUTCOMES)]
        consortium = rng.random() < 0.3
        value = None
        if outcome in ("won", "lost"):
            decided.add(line.body["external_ref"])
            value = int(line.body["estimated_value_pence"] * rng.uniform(0.85, 1.0)) // 100 * 100
        network.bids.append(
            Bid(
                enterprise.ref,
                line.body["external_ref"],
                "consortium_member" if consortium else "lead",
                (rng.choice(PARTNERS),) if consortium else (),
                outcome,
                value,
            )
        )


def drop_in_start(now: datetime) -> datetime:
    """The start of a drop-in session run now: the next whole minute at least 20 s away."""
    start = datetime.combine(now.date(), time(now.hour, now.minute), now.tzinfo) + timedelta(minutes=1)
    return start if (start - now).total_seconds() >= 20 else start + timedelta(minutes=1)


def drop_in_windows(start: datetime, minutes: int = 60) -> dict[date, list[dict[str, str]]]:
    """The availability a drop-in at ``start`` (the mentor's wall clock) needs, by local date: an
    hour from its start, in two windows that touch at midnight when it runs into the next day."""
    end = start + timedelta(minutes=minutes)
    if end.date() == start.date():
        return {start.date(): [{"start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}]}
    windows = {start.date(): [{"start": f"{start:%H:%M}", "end": "24:00"}]}
    if end.time() != time(0):
        windows[end.date()] = [{"start": "00:00", "end": f"{end:%H:%M}"}]
    return windows
