"""The contact's time zone: contact, phone, tenant, UTC; invalid names fall through, reported."""

from __future__ import annotations

import zoneinfo
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.policy.timezones import (
    ContactTimeZone,
    TimeZoneSource,
    TimeZoneWarning,
    load_time_zone,
    resolve_contact_time_zone,
)
from tests.properties import property_settings

BERLIN_PHONE = "+4915112345678"  # Germany: one zone
NEPAL_PHONE = "+9779812345678"  # phonenumbers says Asia/Katmandu (an alias)
AUSTRALIAN_MOBILE = "+61412345678"  # several zones: no phone zone


@pytest.mark.parametrize(
    ("attributes", "phone", "tenant", "zone", "source"),
    [
        ({"timezone": "Asia/Tokyo"}, BERLIN_PHONE, "America/New_York", "Asia/Tokyo", "contact"),
        ({}, BERLIN_PHONE, "America/New_York", "Europe/Berlin", "phone"),
        ({}, "+12125551234", "America/Los_Angeles", "America/New_York", "phone"),
        ({}, NEPAL_PHONE, None, "Asia/Katmandu", "phone"),
        ({}, AUSTRALIAN_MOBILE, "Australia/Lord_Howe", "Australia/Lord_Howe", "tenant"),
        ({}, None, "America/New_York", "America/New_York", "tenant"),
        ({}, "not a number", "America/New_York", "America/New_York", "tenant"),
        ({}, None, None, "UTC", "default"),
        (None, None, None, "UTC", "default"),
        ({"timezone": None}, None, "Asia/Kathmandu", "Asia/Kathmandu", "tenant"),
        ({"timezone": "  "}, None, "Asia/Kathmandu", "Asia/Kathmandu", "tenant"),
        ({"timezone": "america/new_york"}, None, None, "America/New_York", "contact"),
        ({"timezone": " Europe/Paris "}, None, None, "Europe/Paris", "contact"),
        ({"timezone": "UTC"}, BERLIN_PHONE, None, "UTC", "contact"),
        ({"timezone": "US/Eastern"}, None, None, "US/Eastern", "contact"),
    ],
)
def test_sources_in_order(
    attributes: dict[str, Any] | None, phone: str | None, tenant: str | None, zone: str, source: str
) -> None:
    resolved = resolve_contact_time_zone(attributes, phone, tenant)
    assert (resolved.name, resolved.source, resolved.warnings) == (zone, source, ())
    assert resolved.zone == zoneinfo.ZoneInfo(zone)


def test_a_national_phone_number_needs_the_default_region() -> None:
    assert resolve_contact_time_zone({}, "030 12345678", None).source is TimeZoneSource.DEFAULT
    resolved = resolve_contact_time_zone({}, "030 12345678", None, default_region="DE")
    assert (resolved.name, resolved.source) == ("Europe/Berlin", TimeZoneSource.PHONE)


def test_invalid_names_fall_through_and_are_reported() -> None:
    resolved = resolve_contact_time_zone(
        {"timezone": "Mars/Olympus"}, AUSTRALIAN_MOBILE, "Nope/Nope"
    )
    assert resolved == ContactTimeZone(
        zoneinfo.ZoneInfo("UTC"),
        TimeZoneSource.DEFAULT,
        (
            TimeZoneWarning(TimeZoneSource.CONTACT, "'Mars/Olympus'", "is not a known zone"),
            TimeZoneWarning(TimeZoneSource.TENANT, "'Nope/Nope'", "is not a known zone"),
        ),
    )
    assert [str(w) for w in resolved.warnings] == [
        "invalid_timezone: contact 'Mars/Olympus' is not a known zone",
        "invalid_timezone: tenant 'Nope/Nope' is not a known zone",
    ]


def test_an_invalid_contact_zone_falls_to_the_phone() -> None:
    resolved = resolve_contact_time_zone({"timezone": "EST+5"}, BERLIN_PHONE, "Asia/Tokyo")
    assert (resolved.name, resolved.source) == ("Europe/Berlin", TimeZoneSource.PHONE)
    assert [w.source for w in resolved.warnings] == [TimeZoneSource.CONTACT]


@pytest.mark.parametrize(
    "value",
    [
        5,
        ["Europe/Paris"],
        {"name": "Europe/Paris"},
        "Etc/Unknown",  # phonenumbers' "no idea" is not a zone
        "localtime",  # this machine's setting, not a place
        "Factory",
        "posixrules",
        "../../../etc/passwd",
        "/usr/share/zoneinfo/UTC",
        "America",  # a directory of the zone database
        "Europe/Paris\x00",
        "x" * 5000,
    ],
)
def test_unusable_contact_zones_are_reported_not_raised(value: object) -> None:
    resolved = resolve_contact_time_zone({"timezone": value}, None, "Asia/Tokyo")
    assert (resolved.name, resolved.source) == ("Asia/Tokyo", TimeZoneSource.TENANT)
    assert len(resolved.warnings) == 1
    assert resolved.warnings[0].source is TimeZoneSource.CONTACT
    assert len(resolved.warnings[0].value) <= 64


def test_every_installed_zone_loads() -> None:
    names = zoneinfo.available_timezones() - {"localtime", "posixrules", "Factory"}
    assert len(names) > 400
    for name in names:
        zone = load_time_zone(name)
        assert zone is not None and zone.key == name


def test_the_tzdata_package_is_installed() -> None:
    # zoneinfo falls back to it where the OS has no zone files (slim containers).
    import tzdata  # noqa: F401


@property_settings(300)
@given(st.one_of(st.none(), st.text(max_size=40), st.integers(), st.floats(), st.booleans()))
def test_resolution_never_raises(value: object) -> None:
    resolved = resolve_contact_time_zone(
        {"timezone": value}, None, value if isinstance(value, str) else None
    )
    assert isinstance(resolved.zone, zoneinfo.ZoneInfo)
    assert len(resolved.warnings) <= 2
