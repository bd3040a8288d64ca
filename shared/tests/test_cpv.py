"""CPV codes: the check digit, divisions, and the same verdict for every service."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import cpv

# Official codes with their published check digits (CPV 2008), across divisions and levels.
_OFFICIAL_CPV_TABLE = """
03000000-1 03100000-2 03111100-3 03115110-4 03221111-7 09000000-3 09100000-0 09130000-9
09132000-3 09310000-5 14200000-3 15800000-6 18800000-7 24900000-3 30190000-7 30200000-1 33600000-6
34922100-7 39100000-3 45000000-7 45112500-0 45214200-2 45232410-9 45233140-2 45233141-9 48000000-8
50700000-2 51000000-9 55000000-0 55520000-1 60112000-6 71700000-5 72000000-5 72212000-4 79410000-1
79620000-6 80500000-9 85300000-2 90910000-9 90913000-0 92000000-1 98000000-3"""
OFFICIAL_CPV = _OFFICIAL_CPV_TABLE.split()


@pytest.mark.parametrize("code", OFFICIAL_CPV)
def test_official_cpv_codes_with_their_check_digit_are_accepted(code: str) -> None:
    assert cpv.normalise(code) == code


@pytest.mark.parametrize("code", ["45000000-1", "72000000-4", "90910000-8", "09310000-9"])
def test_a_wrong_cpv_check_digit_is_refused(code: str) -> None:
    with pytest.raises(ValueError, match="check digit"):
        cpv.normalise(code)


@pytest.mark.parametrize("code", ["12000000", "01000000-0", "4500000", "450000000", "45000000-", "4500000A"])
def test_malformed_cpv_codes_or_unknown_divisions_are_refused(code: str) -> None:
    with pytest.raises(ValueError):
        cpv.normalise(code)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(cpv.DIVISIONS - {"09"})), st.integers(min_value=0, max_value=999_999))
def test_a_code_with_the_rules_own_check_digit_is_accepted_and_any_other_digit_refused(
    division, rest
) -> None:
    code = f"{division}{rest:06d}"
    if code.startswith("033") or code == "51000000":
        return
    digit = cpv.check_digit(code)
    assert cpv.normalise(f"{code}-{digit}") == f"{code}-{digit}"
    with pytest.raises(ValueError):
        cpv.normalise(f"{code}-{(digit + 1) % 10}")


def test_there_are_45_cpv_divisions() -> None:
    assert len(cpv.DIVISIONS) == 45


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("55520000-1", None),
        ("55520000", None),
        ("55520000-2", "check digit"),
        ("12000000", "no CPV 2008 division"),
        ("5552000", "not a CPV code"),
        (" 55520000", "as written"),
        (55520000, "not a CPV code"),
    ],
)
def test_cpv_error_names_what_is_wrong_with_a_code_as_written(code: object, why: str | None) -> None:
    error = cpv.cpv_error(code)
    assert (error is None) if why is None else (error is not None and why in error), error


def test_the_hierarchy_of_a_code() -> None:
    assert (cpv.base("55520000-1"), cpv.division("55520000-1"), cpv.group("55520000-1")) == (
        "55520000",
        "55",
        "555",
    )
