"""Phone numbers: E.164 form, country and time zone, from Google's libphonenumber data.

Everything here answers None for a number that is not valid (phonenumbers' is_valid_number),
never raises on bad input: phone numbers come from upstream imports and inbound SMS.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import timezone as phone_time_zones

# phonenumbers' answer for "no idea"; its region code for non-geographic numbers (+800, +882).
UNKNOWN_TIME_ZONE = phone_time_zones.UNKNOWN_TIMEZONE
NON_GEOGRAPHIC_REGION = "001"


def parse_phone(
    raw: str | None, default_region: str | None = None
) -> phonenumbers.PhoneNumber | None:
    """The parsed number if `raw` is a valid phone number, else None.

    `raw` in international form (+...) needs no region; a national number ("020 7946 0000")
    needs `default_region`, an ISO 3166-1 alpha-2 code ("GB", case-insensitive). Anything that
    is not a string, does not parse, or is not a valid number (is_valid_number) gives None.
    """
    if not isinstance(raw, str) or not raw.strip():
        return None
    region = default_region.upper() if isinstance(default_region, str) else None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def normalize_e164(raw: str | None, default_region: str | None = None) -> str | None:
    """`raw` in E.164 form ("+442079460000"), or None if it is not a valid number.

    An extension ("... ext. 12") is dropped: E.164 has none and SMS cannot reach one.
    """
    number = parse_phone(raw, default_region)
    if number is None:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_country(raw: str | None, default_region: str | None = None) -> str | None:
    """The ISO 3166-1 alpha-2 region of a valid number ("US", "GB", "JM"), else None.

    Numbers that belong to no country (international freephone +800 and the like) give None.
    """
    number = parse_phone(raw, default_region)
    if number is None:
        return None
    region = phonenumbers.region_code_for_number(number)
    if not region or region == NON_GEOGRAPHIC_REGION:
        return None
    return region


def phone_time_zone(raw: str | None, default_region: str | None = None) -> str | None:
    """The IANA zone of a valid number when phonenumbers knows exactly one, else None.

    phonenumbers maps number prefixes to zones: a single-zone country gives its zone
    (+49 -> Europe/Berlin), and where a country has several zones a geographic prefix may still
    pin one (+1 212 -> America/New_York, +34 928 -> Atlantic/Canary). Several zones (a US
    mobile has a geographic area code, but an Australian mobile does not) or `Etc/Unknown`
    give None. The name is phonenumbers' own and may be a backward-compatible alias
    (Asia/Katmandu); the caller checks it against the installed zone database.
    """
    number = parse_phone(raw, default_region)
    if number is None:
        return None
    zones = phone_time_zones.time_zones_for_number(number)
    if len(zones) != 1 or zones[0] == UNKNOWN_TIME_ZONE:
        return None
    return zones[0]
