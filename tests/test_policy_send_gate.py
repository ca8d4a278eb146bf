"""The send gate over the whole chain the engine uses (settings -> the contact's zone -> quiet
hours or the cap -> a hold with its result), as properties across every zone. The rules' own
exhaustive properties and DST fixtures are in tests/test_policy_quiet_hours.py and
tests/test_policy_frequency.py."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, time, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tasks.policy.quiet_hours import wall_time_in_window
from tasks.policy.send_gate import frequency_cap_hold, quiet_hours_hold
from tasks.policy.settings import parse_tenant_send_policy
from tasks.policy.timezones import NOT_PLACES, resolve_contact_time_zone
from tasks.policy.wall_clock import wall_time
from tests.properties import property_settings

EVERY_ZONE = sorted(zoneinfo.available_timezones() - NOT_PLACES)
TWO_YEARS = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC))
wall_times = st.builds(time, st.integers(0, 23), st.integers(0, 59))


@property_settings(max_examples=400)
@given(
    zone=st.sampled_from(EVERY_ZONE),
    at=st.datetimes(
        min_value=TWO_YEARS[0].replace(tzinfo=None), max_value=TWO_YEARS[1].replace(tzinfo=None)
    ).map(lambda d: d.replace(tzinfo=UTC)),
    start=wall_times,
    end=wall_times,
    action=st.sampled_from(["defer", "skip"]),
)
def test_no_send_inside_the_window_and_a_deferral_ends_it(
    zone: str, at: datetime, start: time, end: time, action: str
) -> None:
    if start == end:
        return
    policy = parse_tenant_send_policy(
        {
            "quiet_hours": {
                "start": start.strftime("%H:%M"),
                "end": end.strftime("%H:%M"),
                "action": action,
            }
        }
    )
    resolved = resolve_contact_time_zone({"timezone": zone}, None, policy.timezone)
    assert resolved.name == zone and not resolved.warnings
    inside = wall_time_in_window(start, end, wall_time(resolved.zone, at).time())
    held = quiet_hours_hold(policy, resolved, at)
    assert (held is not None) == inside
    if held is None:
        return
    assert held.result["timezone"] == zone
    if action == "skip":
        assert held.until is None and held.result["skipped"] == "quiet_hours"
        return
    assert held.until is not None and at < held.until <= at + timedelta(hours=26)
    # Due at the first instant outside: outside then, inside a second before.
    assert not wall_time_in_window(start, end, wall_time(resolved.zone, held.until).time())
    before = held.until - timedelta(seconds=1)
    assert before < at or wall_time_in_window(start, end, wall_time(resolved.zone, before).time())


@property_settings(max_examples=200)
@given(
    cap=st.integers(1, 5),
    sends=st.lists(st.integers(0, 86_399), max_size=8),
    action=st.sampled_from(["skip", "defer"]),
)
def test_a_send_is_held_exactly_when_the_window_holds_the_cap(
    cap: int, sends: list[int], action: str
) -> None:
    at = datetime(2026, 3, 8, 12, tzinfo=UTC)
    policy = parse_tenant_send_policy(
        {"frequency_cap": {"max_messages": cap, "per_seconds": 86_400, "action": action}}
    )
    assert policy.frequency_cap is not None
    zone = resolve_contact_time_zone(None, None, policy.timezone)
    times = [at - timedelta(seconds=s) for s in sends]
    held = frequency_cap_hold(policy.frequency_cap, zone, times, at)
    assert (held is None) == (len(sends) < cap)
    if held is not None and action == "defer":
        assert held.until is not None and held.until > at
        # When it is due, one send has aged out: one more fits.
        assert frequency_cap_hold(policy.frequency_cap, zone, times, held.until) is None
