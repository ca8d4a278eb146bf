"""Tenant send policy: the optional keys of tenants.settings, parsed and validated once.

tenants.settings belongs to upstream (contract Version 2). Keys this worker does not know are
ignored, at the top level and inside its own objects (upstream may add fields before the worker
knows them); the nested ones are listed in `ignored_keys` so a typo ("acton") can be logged. A
known key with a malformed value raises InvalidTenantSettings naming it
(`invalid_tenant_settings: quiet_hours.start must be HH:MM`). JSON null means "not set".

A time zone name is only checked for being a string here: whether the installed zone database
knows it is decided where it is used (tasks.policy.timezones), which falls back and reports
instead of stopping sends.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from enum import StrEnum
from typing import Any, TypeVar

from tasks.errors import InvalidTenantSettings
from tasks.sms.keywords import normalize_keyword
from tasks.sms.phones import normalize_e164

# Send times older than this are never needed to decide a cap, so the counter can drop them.
MAX_FREQUENCY_CAP_SECONDS = 31 * 24 * 3600
WALL_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
Choice = TypeVar("Choice", bound=StrEnum)


class QuietHoursAction(StrEnum):
    DEFER = "defer"  # the journey contact WAITING, due when the window ends
    SKIP = "skip"  # execution SKIPPED, the journey goes on


class FrequencyCapAction(StrEnum):
    SKIP = "skip"  # execution SKIPPED with reason frequency_capped, the journey goes on
    DEFER = "defer"  # the journey contact WAITING, due when a send ages out


class FrequencyCapWindow(StrEnum):
    ROLLING = "rolling"  # at most max_messages in any per_seconds
    CALENDAR_DAY = "calendar_day"  # at most max_messages per calendar day in the contact's zone


@dataclass(frozen=True)
class QuietHours:
    """No sends from `start` to `end`, local wall times of the contact; end < start wraps."""

    start: time
    end: time
    action: QuietHoursAction = QuietHoursAction.DEFER


@dataclass(frozen=True)
class FrequencyCap:
    """At most `max_messages` per window; `per_seconds` is None for a calendar-day cap."""

    max_messages: int
    per_seconds: float | None
    window: FrequencyCapWindow = FrequencyCapWindow.ROLLING
    action: FrequencyCapAction = FrequencyCapAction.SKIP


@dataclass(frozen=True)
class TenantSendPolicy:
    """Everything tenants.settings says about sending; unset keys are None or empty."""

    timezone: str | None = None
    quiet_hours: QuietHours | None = None
    frequency_cap: FrequencyCap | None = None
    send_rate_per_second: float | None = None
    # (E.164 sending number, sends per second), sorted by number.
    send_rate_per_second_by_number: tuple[tuple[str, float], ...] = ()
    opt_out_keywords: tuple[str, ...] = ()
    opt_in_keywords: tuple[str, ...] = ()
    # Keys inside known objects that this worker does not know, as dotted paths.
    ignored_keys: tuple[str, ...] = ()

    def send_rate_for_number(self, sending_number: str | None) -> float | None:
        """The sending number's own rate if it has one, else the tenant's (None: no limit)."""
        if not sending_number or not self.send_rate_per_second_by_number:
            return self.send_rate_per_second
        rates = dict(self.send_rate_per_second_by_number)
        # Sending numbers are usually stored in E.164 already; parse only when not.
        rate = rates.get(sending_number)
        if rate is None:
            rate = rates.get(normalize_e164(sending_number) or "")
        return self.send_rate_per_second if rate is None else rate


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _object(settings: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidTenantSettings(key, "must be an object")
    return value


def _unknown(value: Mapping[str, Any], key: str, known: set[str]) -> list[str]:
    return sorted(f"{key}.{name}" for name in value if name not in known)


def _choice(
    value: Mapping[str, Any], key: str, name: str, kind: type[Choice], default: Choice
) -> Choice:
    raw = value.get(name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        allowed = " or ".join(member.value for member in kind)
        raise InvalidTenantSettings(f"{key}.{name}", f"must be {allowed}") from None


def _wall_time(value: Mapping[str, Any], key: str, name: str) -> time:
    raw = value.get(name)
    match = WALL_TIME.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise InvalidTenantSettings(f"{key}.{name}", "must be HH:MM (00:00 to 23:59)")
    return time(int(match.group(1)), int(match.group(2)))


def parse_quiet_hours(value: Mapping[str, Any]) -> QuietHours:
    """quiet_hours {start, end, action}; start == end is rejected (all day or never?)."""
    start = _wall_time(value, "quiet_hours", "start")
    end = _wall_time(value, "quiet_hours", "end")
    if start == end:
        raise InvalidTenantSettings("quiet_hours", "start and end must differ")
    action = _choice(value, "quiet_hours", "action", QuietHoursAction, QuietHoursAction.DEFER)
    return QuietHours(start=start, end=end, action=action)


def parse_frequency_cap(value: Mapping[str, Any]) -> FrequencyCap:
    """frequency_cap {max_messages, per_seconds, window, action}.

    max_messages is an integer >= 1: a cap of 0 would silently stop every send (a peer's
    default "0" did). A rolling window needs per_seconds in (0, 31 days]; a calendar-day window
    has none.
    """
    max_messages = value.get("max_messages")
    if not isinstance(max_messages, int) or isinstance(max_messages, bool) or max_messages < 1:
        raise InvalidTenantSettings("frequency_cap.max_messages", "must be an integer >= 1")
    window = _choice(
        value, "frequency_cap", "window", FrequencyCapWindow, FrequencyCapWindow.ROLLING
    )
    action = _choice(value, "frequency_cap", "action", FrequencyCapAction, FrequencyCapAction.SKIP)
    per_seconds = value.get("per_seconds")
    if window is FrequencyCapWindow.CALENDAR_DAY:
        if per_seconds is not None:
            raise InvalidTenantSettings(
                "frequency_cap.per_seconds", "does not apply to window calendar_day"
            )
        return FrequencyCap(max_messages, None, window, action)
    if not _is_number(per_seconds) or not 0 < per_seconds <= MAX_FREQUENCY_CAP_SECONDS:
        raise InvalidTenantSettings(
            "frequency_cap.per_seconds",
            f"must be a number of seconds in (0, {MAX_FREQUENCY_CAP_SECONDS}]",
        )
    return FrequencyCap(max_messages, float(per_seconds), window, action)


def _rate(value: object, key: str) -> float:
    if not _is_number(value) or value <= 0:
        raise InvalidTenantSettings(key, "must be a number > 0")
    return float(value)


def _rates_by_number(value: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    key = "send_rate_per_second_by_number"
    rates: dict[str, float] = {}
    for raw_number, rate in value.items():
        number = normalize_e164(raw_number)
        if number is None:
            raise InvalidTenantSettings(key, f"has {raw_number!r}, not an E.164 phone number")
        if number in rates:
            raise InvalidTenantSettings(key, f"names {number} twice")
        rates[number] = _rate(rate, f"{key}.{number}")
    return tuple(sorted(rates.items()))


def _keywords(settings: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = settings.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidTenantSettings(key, "must be a list of strings")
    for index, keyword in enumerate(value):
        if not isinstance(keyword, str) or not normalize_keyword(keyword):
            raise InvalidTenantSettings(
                f"{key}[{index}]", "must be a string with a letter or digit in it"
            )
    return tuple(value)


def parse_tenant_send_policy(settings: object) -> TenantSendPolicy:
    """Parse tenants.settings (a JSON object, or None for none) into a TenantSendPolicy.

    Raises InvalidTenantSettings naming the first malformed known key.
    """
    if settings is None:
        return TenantSendPolicy()
    if not isinstance(settings, Mapping):
        raise InvalidTenantSettings("settings", "must be an object")
    ignored: list[str] = []

    timezone = settings.get("timezone")
    if timezone is not None and not isinstance(timezone, str):
        raise InvalidTenantSettings("timezone", "must be an IANA time zone name (a string)")

    quiet_hours = None
    if (raw_quiet := _object(settings, "quiet_hours")) is not None:
        quiet_hours = parse_quiet_hours(raw_quiet)
        ignored += _unknown(raw_quiet, "quiet_hours", {"start", "end", "action"})

    frequency_cap = None
    if (raw_cap := _object(settings, "frequency_cap")) is not None:
        frequency_cap = parse_frequency_cap(raw_cap)
        known = {"max_messages", "per_seconds", "window", "action"}
        ignored += _unknown(raw_cap, "frequency_cap", known)

    send_rate = settings.get("send_rate_per_second")
    if send_rate is not None:
        send_rate = _rate(send_rate, "send_rate_per_second")
    rates_by_number: tuple[tuple[str, float], ...] = ()
    if (raw_rates := _object(settings, "send_rate_per_second_by_number")) is not None:
        rates_by_number = _rates_by_number(raw_rates)

    return TenantSendPolicy(
        timezone=timezone,
        quiet_hours=quiet_hours,
        frequency_cap=frequency_cap,
        send_rate_per_second=send_rate,
        send_rate_per_second_by_number=rates_by_number,
        opt_out_keywords=_keywords(settings, "opt_out_keywords"),
        opt_in_keywords=_keywords(settings, "opt_in_keywords"),
        ignored_keys=tuple(ignored),
    )
