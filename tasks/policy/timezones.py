"""The contact's time zone, and which source it came from.

In order (contract Version 2): `contacts.attributes.timezone` (an IANA name), else the phone
number's single zone, else the tenant's `settings.timezone`, else UTC. A name the installed zone
database does not know falls through to the next source and is reported as a warning for the
caller to log and count; it never raises and never stops a send (a peer silently dropped about
3,800 of 600,000 sends on invalid zones).

The phone's zone is phonenumbers' zone for the number when it knows exactly one
(tasks.sms.phones.phone_time_zone): the country's zone for a single-zone country, and where a
country has several, the zone its geographic prefix pins when there is one (+1 212 is
America/New_York), else none.

A zone name is valid when it is in zoneinfo.available_timezones() (the system's zone files and
the tzdata package, so it works where the OS has none), less the names that are not places:
`localtime` (whatever this machine is set to), `posixrules` and `Factory`. Letter case is
forgiven ("america/new_york"), since the names come from people and imports.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tasks.sms.phones import phone_time_zone

DEFAULT_TIME_ZONE = "UTC"
NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})
# Warnings quote the value; a long one is cut (it is user data, and a log line is not a dump).
MAX_QUOTED_VALUE = 64


class TimeZoneSource(StrEnum):
    CONTACT = "contact"  # contacts.attributes.timezone
    PHONE = "phone"  # the phone number's single zone
    TENANT = "tenant"  # tenants.settings.timezone
    DEFAULT = "default"  # UTC


@dataclass(frozen=True)
class TimeZoneWarning:
    """A zone name from `source` that could not be used; `value` quotes it (cut at 64)."""

    source: TimeZoneSource
    value: str
    problem: str

    def __str__(self) -> str:
        return f"invalid_timezone: {self.source} {self.value} {self.problem}"


@dataclass(frozen=True)
class ContactTimeZone:
    """The zone to use for a contact, the source that gave it, and what was passed over."""

    zone: zoneinfo.ZoneInfo
    source: TimeZoneSource
    warnings: tuple[TimeZoneWarning, ...] = ()

    @property
    def name(self) -> str:
        return self.zone.key


@functools.cache
def _known_names() -> dict[str, str]:
    """Every usable zone name, keyed by its casefolded form."""
    names = zoneinfo.available_timezones() - NOT_PLACES
    return {name.casefold(): name for name in names}


def load_time_zone(name: object) -> zoneinfo.ZoneInfo | None:
    """The zone called `name` (an IANA name, any letter case), or None if there is none.

    Never raises: anything that is not a string naming an installed zone gives None.
    """
    if not isinstance(name, str):
        return None
    canonical = _known_names().get(name.strip().casefold())
    if canonical is None:
        return None
    try:
        return zoneinfo.ZoneInfo(canonical)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= MAX_QUOTED_VALUE else text[: MAX_QUOTED_VALUE - 3] + "..."


def _is_unset(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def resolve_contact_time_zone(
    contact_attributes: Mapping[str, Any] | None,
    phone: str | None,
    tenant_timezone: str | None,
    default_region: str | None = None,
) -> ContactTimeZone:
    """The contact's zone: attributes.timezone, else the phone's zone, else the tenant's, else UTC.

    `contact_attributes` is contacts.attributes, `phone` contacts.phone, `tenant_timezone`
    TenantSendPolicy.timezone, `default_region` a region for a phone stored without a country
    code. A set but unusable name (not a string, or unknown to the zone database) is skipped
    with a warning; an unset one (missing, null, blank) and a phone without a single zone are
    skipped silently. Never raises.
    """
    warnings: list[TimeZoneWarning] = []
    attributes = contact_attributes if isinstance(contact_attributes, Mapping) else {}
    # Lazily: parsing the phone costs more than the rest, and a contact's own zone usually wins.
    candidates: tuple[tuple[TimeZoneSource, Callable[[], object]], ...] = (
        (TimeZoneSource.CONTACT, lambda: attributes.get("timezone")),
        (TimeZoneSource.PHONE, lambda: phone_time_zone(phone, default_region)),
        (TimeZoneSource.TENANT, lambda: tenant_timezone),
    )
    for source, read in candidates:
        value = read()
        if _is_unset(value):
            continue
        zone = load_time_zone(value)
        if zone is not None:
            return ContactTimeZone(zone, source, tuple(warnings))
        problem = "is not a zone name" if not isinstance(value, str) else "is not a known zone"
        warnings.append(TimeZoneWarning(source, _quote(value), problem))
    return ContactTimeZone(
        zoneinfo.ZoneInfo(DEFAULT_TIME_ZONE), TimeZoneSource.DEFAULT, tuple(warnings)
    )
