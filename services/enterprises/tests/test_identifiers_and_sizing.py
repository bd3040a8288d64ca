"""UK identifiers (postcodes, register numbers) and the Companies Act size class."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.enterprises.identifiers import normalise_postcode, normalise_registration_number
from services.enterprises.sizing import size_class


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ls62qr", "LS6 2QR"),
        (" LS6   2QR ", "LS6 2QR"),
        ("sw1a1aa", "SW1A 1AA"),
        ("EC1A 1BB", "EC1A 1BB"),
        ("W1A 0AX", "W1A 0AX"),
        ("M1 1AE", "M1 1AE"),
        ("B33 8TH", "B33 8TH"),
        ("DN55 1PT", "DN55 1PT"),
        ("BT1 5GS", "BT1 5GS"),
        ("gir 0aa", "GIR 0AA"),
    ],
)
def test_uk_postcodes_are_normalised(raw: str, expected: str) -> None:
    assert normalise_postcode(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "LS6", "LS6 2QRX", "QS6 2QR", "LS6 2QC", "LS6 2IR", "12345", "LS6-2QR", "LSS 2QR"]
)
def test_malformed_postcodes_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="postcode"):
        normalise_postcode(raw)


@pytest.mark.parametrize(
    ("legal_form", "raw", "expected"),
    [
        ("company_limited_by_shares", "1234567", "01234567"),
        ("company_limited_by_guarantee", "sc 123456", "SC123456"),
        ("cic_limited_by_guarantee", "R0123456", "R0123456"),
        ("charity", "1123456-1", "1123456-1"),
        ("charity", "nic100002", "NIC100002"),
        ("cio", "CE001234", "CE001234"),
        ("cio", "SC045678", "SC045678"),
        ("cooperative_society", "2345RS", "2345RS"),
        ("community_benefit_society", "IP29812R", "IP29812R"),
        ("community_benefit_society", "RS007456", "RS007456"),
        ("partnership", "SO301234", "SO301234"),
        ("other", "ABC/123", "ABC/123"),
        ("sole_trader", "", None),
        ("charity", None, None),
    ],
)
def test_register_numbers_are_normalised_per_legal_form(
    legal_form: str, raw: str | None, expected: str | None
) -> None:
    assert normalise_registration_number(legal_form, raw) == expected


@pytest.mark.parametrize(
    ("legal_form", "raw"),
    [
        ("company_limited_by_shares", "123456789"),
        ("company_limited_by_shares", "XX123456"),
        ("charity", "0123456"),
        ("charity", "12345"),
        ("cio", "SC12345"),
        ("cooperative_society", "12345X"),
        ("partnership", "01234567"),
        ("sole_trader", "01234567"),
    ],
)
def test_register_numbers_not_plausible_for_the_legal_form_are_refused(legal_form: str, raw: str) -> None:
    with pytest.raises(ValueError):
        normalise_registration_number(legal_form, raw)


@pytest.mark.parametrize(
    ("employees", "turnover_pence", "expected"),
    [
        (None, None, "micro"),
        (10, 100_000_000, "micro"),
        (11, 100_000_000, "small"),
        (10, 100_000_001, "small"),
        (50, 1_500_000_000, "small"),
        (51, None, "medium"),
        (None, 5_400_000_000, "medium"),
        (250, 5_400_000_001, "large"),
        (251, 0, "large"),
        (0, None, "micro"),
    ],
)
def test_size_class_follows_the_companies_act_thresholds(employees, turnover_pence, expected) -> None:
    assert size_class(employees, turnover_pence) == expected


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 10**11), st.integers(0, 100), st.integers(0, 10**9))
def test_a_bigger_enterprise_is_never_in_a_smaller_class(
    employees, turnover, more_staff, more_turnover
) -> None:
    order = ["micro", "small", "medium", "large"]
    smaller = order.index(size_class(employees, turnover))
    bigger = order.index(size_class(employees + more_staff, turnover + more_turnover))
    assert bigger >= smaller
