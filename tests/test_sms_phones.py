"""Phone numbers: E.164, country and single time zone (plain functions, phonenumbers' data)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.sms.phones import normalize_e164, phone_country, phone_time_zone
from tests.properties import property_settings


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (212) 555-1234", None, "+12125551234"),
        ("+12125551234", None, "+12125551234"),
        ("  +44 20 7946 0000 ", None, "+442079460000"),
        ("020 7946 0000", "GB", "+442079460000"),
        ("020 7946 0000", "gb", "+442079460000"),
        ("(212) 555-1234", "US", "+12125551234"),
        ("00 49 151 12345678", "FR", "+4915112345678"),  # international prefix from France
        ("+1 800 FLOWERS", None, "+18003569377"),  # vanity letters
        ("+1 212 555 1234 ext. 12", None, "+12125551234"),  # extension dropped
        ("tel:+33-6-12-34-56-78", None, "+33612345678"),
        ("+977 981-2345678", None, "+9779812345678"),
    ],
)
def test_normalize_e164_valid_numbers(raw: str, region: str | None, expected: str) -> None:
    assert normalize_e164(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("", None),
        ("   ", None),
        (None, None),
        ("hello", None),
        ("12345", None),
        ("020 7946 0000", None),  # national number, no region to read it in
        ("020 7946 0000", "XX"),  # no such region
        ("+1 555 0100", None),  # too short for the North American plan
        ("+44 20 7946 00001234", None),  # too long
        ("+882 3 4567 8901", None),  # parses, but not a valid number
        ("+" + "1" * 300, None),  # absurdly long input
    ],
)
def test_normalize_e164_rejects_what_is_not_a_valid_number(
    raw: str | None, region: str | None
) -> None:
    assert normalize_e164(raw, region) is None


def test_non_string_input_is_none_not_an_error() -> None:
    assert normalize_e164(12125551234) is None  # type: ignore[arg-type]
    assert phone_country(["+12125551234"]) is None  # type: ignore[arg-type]
    assert phone_time_zone(b"+12125551234") is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "country"),
    [
        ("+12125551234", "US"),
        ("+16135550123", "CA"),
        ("+18765551234", "JM"),  # shares +1 with the US
        ("+442079460000", "GB"),
        ("+4915112345678", "DE"),
        ("+80012345678", None),  # international freephone: valid, but no country
        ("+1 555 0100", None),  # invalid
    ],
)
def test_phone_country(raw: str, country: str | None) -> None:
    assert phone_country(raw) == country


@pytest.mark.parametrize(
    ("raw", "zone"),
    [
        ("+4915112345678", "Europe/Berlin"),  # single-zone country
        ("+33612345678", "Europe/Paris"),
        ("+9779812345678", "Asia/Katmandu"),  # phonenumbers' own (alias) spelling
        ("+12125551234", "America/New_York"),  # a geographic area code pins one zone
        ("+14155550123", "America/Los_Angeles"),
        ("+34928123456", "Atlantic/Canary"),
        ("+61412345678", None),  # Australian mobile: several zones
        ("+34612345678", None),  # Spanish mobile: Madrid or the Canaries
        ("+19075550123", None),  # Alaska: two zones
        ("+18765551234", None),  # Jamaica: phonenumbers lists the whole +1 plan
        ("+80012345678", None),  # Etc/Unknown
        ("not a phone", None),
    ],
)
def test_phone_time_zone_only_when_exactly_one(raw: str, zone: str | None) -> None:
    assert phone_time_zone(raw) == zone


@property_settings(300)
@given(
    st.one_of(st.text(max_size=40), st.from_regex(r"\+[1-9][0-9 ]{7,16}", fullmatch=True)),
    st.sampled_from([None, "US", "GB", "de", "", "XX"]),
)
def test_phone_functions_never_raise(raw: str, region: str | None) -> None:
    normalized = normalize_e164(raw, region)
    phone_country(raw, region)
    phone_time_zone(raw, region)
    if normalized is not None:
        # E.164 is idempotent: the normal form normalizes to itself, with or without region.
        assert normalized.startswith("+") and normalized[1:].isdigit()
        assert normalize_e164(normalized) == normalized
