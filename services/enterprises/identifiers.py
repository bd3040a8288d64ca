"""UK identifiers an enterprise gives us: postcodes and register numbers (CPV codes: ``shared.cpv``).

Each ``normalise_*`` function returns the canonical spelling or raises
:class:`ValueError` with a message fit for a person; nothing here touches the database.
"""

from __future__ import annotations

import re
from typing import Final

LEGAL_FORMS: Final = (
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
)

# --- postcodes -------------------------------------------------------------------------------

# The outward code shapes A9, A99, AA9, AA99, A9A, AA9A with the letters Royal Mail allows
# in each position; the inward code never uses C, I, K, M, O or V.
_OUTWARD = (
    r"(?:[A-PR-UWYZ][0-9]{1,2}"
    r"|[A-PR-UWYZ][A-HK-Y][0-9]{1,2}"
    r"|[A-PR-UWYZ][0-9][A-HJKPSTUW]"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRVWXY])"
)
_INWARD = r"[0-9][ABD-HJLNP-UW-Z]{2}"
_POSTCODE = re.compile(rf"^(?:{_OUTWARD} {_INWARD}|GIR 0AA)$")


def normalise_postcode(raw: str) -> str:
    """``"ls62qr"`` -> ``"LS6 2QR"``; ValueError unless it is a well-formed UK postcode."""
    compact = re.sub(r"\s+", "", raw).upper()
    if not 5 <= len(compact) <= 7:
        raise ValueError("not a UK postcode: expected 5 to 7 letters and digits, such as LS6 2QR")
    spaced = f"{compact[:-3]} {compact[-3:]}"
    if not _POSTCODE.match(spaced):
        raise ValueError(f"not a well-formed UK postcode: {raw.strip()!r} (for example LS6 2QR)")
    return spaced


# --- register numbers ------------------------------------------------------------------------

_COMPANY = re.compile(r"^(?:\d{8}|(?:SC|NI|R0)\d{6})$")
_CHARITY = re.compile(r"^(?:[1-9]\d{5,7}(?:-\d{1,2})?|SC0\d{5}|NIC\d{6})$")
_CIO = re.compile(r"^(?:[1-9]\d{5,7}|SC0\d{5}|NIC\d{6}|CE\d{6}|CS\d{6})$")
_SOCIETY = re.compile(r"^(?:\d{1,6}|\d{1,6}R|\d{1,6}RS|IP\d{5,6}R?|RS\d{6}|SP\d{4,6}R?S?|NP\d{6})$")
_PARTNERSHIP = re.compile(r"^(?:OC|SO|NC|LP|SL|NL)\d{6}$")
_OTHER = re.compile(r"^[A-Z0-9][A-Z0-9/-]{1,19}$")

_REGISTERS: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    "company_limited_by_shares": (
        _COMPANY,
        "a Companies House number: 8 digits (01234567) or SC, NI or R0 and 6 digits",
    ),
    "company_limited_by_guarantee": (
        _COMPANY,
        "a Companies House number: 8 digits (01234567) or SC, NI or R0 and 6 digits",
    ),
    "cic_limited_by_shares": (
        _COMPANY,
        "a Companies House number: 8 digits (01234567) or SC, NI or R0 and 6 digits",
    ),
    "cic_limited_by_guarantee": (
        _COMPANY,
        "a Companies House number: 8 digits (01234567) or SC, NI or R0 and 6 digits",
    ),
    "cio": (
        _CIO,
        "a charity number: 6 to 8 digits (England and Wales), SC0 and 5 digits (Scotland), "
        "NIC and 6 digits (Northern Ireland), or CE/CS and 6 digits",
    ),
    "charity": (
        _CHARITY,
        "a charity number: 6 to 8 digits (England and Wales, optionally -N for a linked charity), "
        "SC0 and 5 digits (Scotland) or NIC and 6 digits (Northern Ireland)",
    ),
    "cooperative_society": (
        _SOCIETY,
        "an FCA Mutuals Public Register number such as 12345R, 2345RS, IP12345R, RS001234 or 31234",
    ),
    "community_benefit_society": (
        _SOCIETY,
        "an FCA Mutuals Public Register number such as 12345R, 2345RS, IP12345R, RS001234 or 31234",
    ),
    "partnership": (
        _PARTNERSHIP,
        "an LLP or limited partnership number: OC, SO, NC, LP, SL or NL and 6 digits "
        "(an ordinary partnership has none)",
    ),
    "other": (_OTHER, "2 to 20 letters, digits, '/' or '-'"),
}


def normalise_registration_number(legal_form: str, raw: str | None) -> str | None:
    """The register number in its canonical spelling for ``legal_form``, or ValueError.

    Companies House numbers lose their spaces and get their leading zeros back
    (``"1234567"`` -> ``"01234567"``); a sole trader has no register number.
    """
    if raw is None:
        return None
    compact = re.sub(r"\s+", "", raw).upper()
    if not compact:
        return None
    if legal_form == "sole_trader":
        raise ValueError("a sole trader is not on a register: leave registration_number empty")
    if legal_form not in _REGISTERS:
        raise ValueError(f"unknown legal form {legal_form!r}")
    pattern, expected = _REGISTERS[legal_form]
    if pattern is _COMPANY and compact.isdigit() and len(compact) < 8:
        compact = compact.zfill(8)
    if not pattern.match(compact):
        raise ValueError(f"not plausible for {legal_form}: expected {expected}")
    return compact


def registration_number_spellings(raw: str | None) -> set[str]:
    """Every canonical spelling ``raw`` has under some legal form (a number given without its
    legal form, as in a contract award): ``"1234567"`` -> ``{"01234567", "1234567"}``."""
    spellings = set()
    for legal_form in _REGISTERS:
        try:
            spelling = normalise_registration_number(legal_form, raw)
        except ValueError:
            continue
        if spelling is not None:
            spellings.add(spelling)
    return spellings
