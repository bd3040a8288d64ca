"""The Common Procurement Vocabulary (CPV 2008): well-formed codes, check digits, hierarchy.

A public standard both the demand and the enterprises services validate against, kept in
one place so that a code one service accepts the other accepts too. A code is eight digits
with an optional check digit (``55510000`` or ``55510000-8``). Division = the first two
digits, group = three, class = four, category = five; a code ending in zeros names the
whole branch above it (``55500000`` is group 555).
"""

from __future__ import annotations

import re
from typing import Final

# The 45 divisions of CPV 2008 (DOMAIN.md).
_DIVISION_TABLE = (
    "03 09 14 15 16 18 19 22 24 30 31 32 33 34 35 37 38 39 41 42 43 44 45 48 50 51 55 60 63 64 65 66 70 "
    "71 72 73 75 76 77 79 80 85 90 92 98"
)
DIVISIONS: Final = frozenset(_DIVISION_TABLE.split())
assert len(DIVISIONS) == 45

_CODE = re.compile(r"^(\d{8})(?:-(\d))?$")
_WEIGHTS: Final = (3, 7, 1, 3, 7, 1, 3, 7)
# Where the official CPV 2008 list departs from the weighted rule (found by checking the rule
# against published codes): the fuel and energy division 09 below its root is shifted by 6,
# two top-level codes carry their own digit, and group 033 is not known well enough to check.
_SHIFTED_DIVISION: Final = ("09", 6)
_OWN_DIGIT: Final = {"03300000": 2, "51000000": 9}
_UNCHECKED_PREFIXES: Final = ("033",)


def check_digit(code: str) -> int:
    """The check digit the weighted rule gives an 8-digit CPV code (weights 3, 7, 1 repeating, mod 10).

    The rule reproduces the published digit of 149 of 155 sampled official codes; the
    others are handled by :func:`check_digit_accepted`.
    """
    return sum(int(d) * w for d, w in zip(code, _WEIGHTS, strict=True)) % 10


def check_digit_accepted(code: str, digit: int) -> bool:
    if code in _OWN_DIGIT:
        return digit == _OWN_DIGIT[code]
    if code.startswith(_UNCHECKED_PREFIXES):
        return True
    expected = check_digit(code)
    division, shift = _SHIFTED_DIVISION
    if code.startswith(division) and code != division + "000000":
        expected = (expected + shift) % 10
    return digit == expected


def normalise(raw: str) -> str:
    """``"45000000-7"`` or ``"45000000"`` (spaces removed); ValueError for a malformed code,
    an unknown division or a check digit that does not belong to the code."""
    compact = re.sub(r"\s+", "", raw)
    match = _CODE.match(compact)
    if match is None:
        raise ValueError(
            f"not a CPV code: {raw.strip()!r} (expected XXXXXXXX or XXXXXXXX-Y, e.g. 45000000-7)"
        )
    code, digit = match.group(1), match.group(2)
    if code[:2] not in DIVISIONS:
        raise ValueError(f"CPV code {code} is in no CPV 2008 division ({code[:2]} is not one)")
    if digit is not None and not check_digit_accepted(code, int(digit)):
        raise ValueError(f"the check digit of CPV code {compact} is wrong; give the code without it")
    return compact


def cpv_error(code: object) -> str | None:
    """Why ``code`` is not a CPV code as written (no normalising), or None when it is one."""
    if not isinstance(code, str):
        return f"{code!r} is not a CPV code: use 8 digits with an optional check digit, e.g. 55510000-8"
    try:
        canonical = normalise(code)
    except ValueError as exc:
        return str(exc)
    if canonical != code:
        return f"{code!r} is not a CPV code as written: use {canonical!r}"
    return None


def base(code: str) -> str:
    """The eight digits, without the check digit."""
    return code[:8]


def division(code: str) -> str:
    return code[:2]


def group(code: str) -> str:
    return code[:3]


# The names of the divisions as the CPV 2008 regulation (EC 213/2008) gives them, for people
# reading figures by division.
DIVISION_NAMES: Final[dict[str, str]] = {
    "03": "Agricultural, farming, fishing, forestry and related products",
    "09": "Petroleum products, fuel, electricity and other sources of energy",
    "14": "Mining, basic metals and related products",
    "15": "Food, beverages, tobacco and related products",
    "16": "Agricultural machinery",
    "18": "Clothing, footwear, luggage articles and accessories",
    "19": "Leather and textile fabrics, plastic and rubber materials",
    "22": "Printed matter and related products",
    "24": "Chemical products",
    "30": "Office and computing machinery, equipment and supplies",
    "31": "Electrical machinery, apparatus, equipment and consumables; lighting",
    "32": "Radio, television, communication and telecommunication equipment",
    "33": "Medical equipment, pharmaceuticals and personal care products",
    "34": "Transport equipment and auxiliary products to transportation",
    "35": "Security, fire-fighting, police and defence equipment",
    "37": "Musical instruments, sport goods, games, toys, handicraft and art materials",
    "38": "Laboratory, optical and precision equipment",
    "39": "Furniture, furnishings, domestic appliances and cleaning products",
    "41": "Collected and purified water",
    "42": "Industrial machinery",
    "43": "Machinery for mining, quarrying and construction",
    "44": "Construction structures and materials",
    "45": "Construction work",
    "48": "Software packages and information systems",
    "50": "Repair and maintenance services",
    "51": "Installation services (except software)",
    "55": "Hotel, restaurant and retail trade services",
    "60": "Transport services (excluding waste transport)",
    "63": "Supporting and auxiliary transport services; travel agencies",
    "64": "Postal and telecommunications services",
    "65": "Public utilities",
    "66": "Financial and insurance services",
    "70": "Real estate services",
    "71": "Architectural, construction, engineering and inspection services",
    "72": "IT services: consulting, software development, Internet and support",
    "73": "Research and development services and related consultancy",
    "75": "Administration, defence and social security services",
    "76": "Services related to the oil and gas industry",
    "77": "Agricultural, forestry, horticultural, aquacultural and apicultural services",
    "79": "Business services: law, marketing, consulting, recruitment, printing and security",
    "80": "Education and training services",
    "85": "Health and social work services",
    "90": "Sewage, refuse, cleaning and environmental services",
    "92": "Recreational, cultural and sporting services",
    "98": "Other community, social and personal services",
}
assert DIVISION_NAMES.keys() == DIVISIONS
