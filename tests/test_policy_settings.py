"""Tenant send policy settings: parsed into frozen dataclasses, malformed keys named."""

from __future__ import annotations

import dataclasses
from datetime import time
from typing import Any

import pytest

from tasks.errors import InvalidTenantSettings, PermanentError
from tasks.policy.settings import (
    FrequencyCap,
    FrequencyCapAction,
    FrequencyCapWindow,
    QuietHours,
    QuietHoursAction,
    TenantSendPolicy,
    parse_tenant_send_policy,
)

CONTRACT_EXAMPLE = {
    "timezone": "America/New_York",
    "quiet_hours": {"start": "21:00", "end": "08:00", "action": "defer"},
    "frequency_cap": {"max_messages": 3, "per_seconds": 86400, "action": "skip"},
    "send_rate_per_second": 50,
    "opt_out_keywords": ["ARRET"],
    "opt_in_keywords": ["REPRENDRE"],
}


def test_the_contract_example_parses() -> None:
    policy = parse_tenant_send_policy(CONTRACT_EXAMPLE)
    assert policy == TenantSendPolicy(
        timezone="America/New_York",
        quiet_hours=QuietHours(time(21, 0), time(8, 0), QuietHoursAction.DEFER),
        frequency_cap=FrequencyCap(3, 86400.0, FrequencyCapWindow.ROLLING, FrequencyCapAction.SKIP),
        send_rate_per_second=50.0,
        opt_out_keywords=("ARRET",),
        opt_in_keywords=("REPRENDRE",),
    )


@pytest.mark.parametrize("settings", [None, {}, {"timezone": None, "quiet_hours": None}])
def test_nothing_set_is_no_policy(settings: dict[str, Any] | None) -> None:
    assert parse_tenant_send_policy(settings) == TenantSendPolicy()


def test_defaults_for_actions_and_window() -> None:
    policy = parse_tenant_send_policy(
        {
            "quiet_hours": {"start": "12:00", "end": "13:00"},
            "frequency_cap": {"max_messages": 1, "per_seconds": 60},
        }
    )
    assert policy.quiet_hours is not None and policy.frequency_cap is not None
    assert policy.quiet_hours.action is QuietHoursAction.DEFER
    assert policy.frequency_cap.action is FrequencyCapAction.SKIP
    assert policy.frequency_cap.window is FrequencyCapWindow.ROLLING


def test_calendar_day_cap_has_no_per_seconds() -> None:
    policy = parse_tenant_send_policy(
        {"frequency_cap": {"max_messages": 2, "window": "calendar_day", "action": "defer"}}
    )
    assert policy.frequency_cap == FrequencyCap(
        2, None, FrequencyCapWindow.CALENDAR_DAY, FrequencyCapAction.DEFER
    )


def test_unknown_keys_are_ignored_and_nested_ones_listed() -> None:
    policy = parse_tenant_send_policy(
        {
            "branding": {"color": "red"},  # upstream's, not ours
            "quiet_hours": {"start": "21:00", "end": "08:00", "acton": "skip", "days": [1]},
            "frequency_cap": {"max_messages": 3, "per_seconds": 60, "burst": 2},
        }
    )
    assert policy.ignored_keys == ("quiet_hours.acton", "quiet_hours.days", "frequency_cap.burst")
    assert policy.quiet_hours is not None
    assert policy.quiet_hours.action is QuietHoursAction.DEFER  # the typo did not apply


def test_an_unknown_zone_name_is_kept_for_the_resolver_to_report() -> None:
    # Whether a zone exists depends on the installed tz database; the resolver falls back.
    assert parse_tenant_send_policy({"timezone": "Mars/Olympus"}).timezone == "Mars/Olympus"


def test_send_rate_per_sending_number() -> None:
    policy = parse_tenant_send_policy(
        {
            "send_rate_per_second": 50,
            "send_rate_per_second_by_number": {"+1 212 555 1234": 1, "+442079460000": 2.5},
        }
    )
    assert policy.send_rate_per_second_by_number == (("+12125551234", 1.0), ("+442079460000", 2.5))
    assert policy.send_rate_for_number("+1 (212) 555-1234") == 1.0
    assert policy.send_rate_for_number("+442079460000") == 2.5
    assert policy.send_rate_for_number("+14155550123") == 50.0
    assert policy.send_rate_for_number(None) == 50.0
    assert TenantSendPolicy().send_rate_for_number("+14155550123") is None


def test_the_policy_is_frozen() -> None:
    policy = parse_tenant_send_policy(CONTRACT_EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.timezone = "UTC"  # type: ignore[misc]
    assert hash(policy) == hash(parse_tenant_send_policy(CONTRACT_EXAMPLE))


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        (["not", "an", "object"], "settings must be an object"),
        ({"timezone": 5}, "timezone must be an IANA time zone name"),
        ({"quiet_hours": "21:00-08:00"}, "quiet_hours must be an object"),
        ({"quiet_hours": {"start": "9pm", "end": "08:00"}}, "quiet_hours.start must be HH:MM"),
        ({"quiet_hours": {"start": "21:00"}}, "quiet_hours.end must be HH:MM"),
        ({"quiet_hours": {"start": "24:00", "end": "08:00"}}, "quiet_hours.start must be HH:MM"),
        ({"quiet_hours": {"start": "21:60", "end": "08:00"}}, "quiet_hours.start must be HH:MM"),
        ({"quiet_hours": {"start": "9:00", "end": "08:00"}}, "quiet_hours.start must be HH:MM"),
        ({"quiet_hours": {"start": "21:00:00", "end": "08:00"}}, "quiet_hours.start must be HH:MM"),
        (
            {"quiet_hours": {"start": "\uff12\uff11:\uff10\uff10", "end": "08:00"}},
            "quiet_hours.start must be HH:MM",
        ),
        ({"quiet_hours": {"start": 2100, "end": "08:00"}}, "quiet_hours.start must be HH:MM"),
        (
            {"quiet_hours": {"start": "08:00", "end": "08:00"}},
            "quiet_hours start and end must differ",
        ),
        (
            {"quiet_hours": {"start": "21:00", "end": "08:00", "action": "drop"}},
            "quiet_hours.action must be defer or skip",
        ),
        (
            {"quiet_hours": {"start": "21:00", "end": "08:00", "action": ["skip"]}},
            "quiet_hours.action must be defer or skip",
        ),
        ({"frequency_cap": []}, "frequency_cap must be an object"),
        (
            {"frequency_cap": {"per_seconds": 60}},
            "frequency_cap.max_messages must be an integer >= 1",
        ),
        (
            {"frequency_cap": {"max_messages": 0, "per_seconds": 60}},
            "frequency_cap.max_messages must be an integer >= 1",
        ),
        (
            {"frequency_cap": {"max_messages": 2.5, "per_seconds": 60}},
            "frequency_cap.max_messages must be an integer >= 1",
        ),
        (
            {"frequency_cap": {"max_messages": True, "per_seconds": 60}},
            "frequency_cap.max_messages must be an integer >= 1",
        ),
        ({"frequency_cap": {"max_messages": 3}}, "frequency_cap.per_seconds must be a number"),
        (
            {"frequency_cap": {"max_messages": 3, "per_seconds": 0}},
            "frequency_cap.per_seconds must be a number",
        ),
        (
            {"frequency_cap": {"max_messages": 3, "per_seconds": "86400"}},
            "frequency_cap.per_seconds must be a number",
        ),
        (
            {"frequency_cap": {"max_messages": 3, "per_seconds": 40 * 86400}},
            "frequency_cap.per_seconds must be a number of seconds in (0, 2678400]",
        ),
        (
            {"frequency_cap": {"max_messages": 3, "per_seconds": float("nan")}},
            "frequency_cap.per_seconds must be a number",
        ),
        (
            {"frequency_cap": {"max_messages": 3, "per_seconds": 60, "action": "drop"}},
            "frequency_cap.action must be skip or defer",
        ),
        (
            {"frequency_cap": {"max_messages": 3, "per_seconds": 60, "window": "week"}},
            "frequency_cap.window must be rolling or calendar_day",
        ),
        (
            {"frequency_cap": {"max_messages": 3, "per_seconds": 60, "window": "calendar_day"}},
            "frequency_cap.per_seconds does not apply to window calendar_day",
        ),
        ({"send_rate_per_second": 0}, "send_rate_per_second must be a number > 0"),
        ({"send_rate_per_second": -5}, "send_rate_per_second must be a number > 0"),
        ({"send_rate_per_second": "50"}, "send_rate_per_second must be a number > 0"),
        ({"send_rate_per_second": False}, "send_rate_per_second must be a number > 0"),
        (
            {"send_rate_per_second_by_number": ["+12125551234"]},
            "send_rate_per_second_by_number must be an object",
        ),
        (
            {"send_rate_per_second_by_number": {"12345": 1}},
            "send_rate_per_second_by_number has '12345', not an E.164 phone number",
        ),
        (
            {"send_rate_per_second_by_number": {"+12125551234": 1, "+1 212 555 1234": 2}},
            "send_rate_per_second_by_number names +12125551234 twice",
        ),
        (
            {"send_rate_per_second_by_number": {"+12125551234": 0}},
            "send_rate_per_second_by_number.+12125551234 must be a number > 0",
        ),
        ({"opt_out_keywords": "ARRET"}, "opt_out_keywords must be a list of strings"),
        ({"opt_out_keywords": ["ARRET", 5]}, "opt_out_keywords[1] must be a string"),
        ({"opt_in_keywords": ["  ", "YES"]}, "opt_in_keywords[0] must be a string"),
        ({"opt_in_keywords": ["!!"]}, "opt_in_keywords[0] must be a string"),
    ],
)
def test_malformed_known_keys_are_named(settings: Any, reason: str) -> None:
    with pytest.raises(InvalidTenantSettings) as raised:
        parse_tenant_send_policy(settings)
    assert raised.value.reason.startswith("invalid_tenant_settings: ")
    assert reason in raised.value.reason
    # A permanent error: retrying the same settings can never succeed.
    assert isinstance(raised.value, PermanentError)


def test_the_error_carries_the_key_and_the_problem() -> None:
    with pytest.raises(InvalidTenantSettings) as raised:
        parse_tenant_send_policy({"quiet_hours": {"start": "9pm", "end": "08:00"}})
    assert raised.value.key == "quiet_hours.start"
    assert raised.value.problem == "must be HH:MM (00:00 to 23:59)"
    assert (
        str(raised.value)
        == "invalid_tenant_settings: quiet_hours.start must be HH:MM (00:00 to 23:59)"
    )
