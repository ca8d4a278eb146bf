"""Frequency caps, the rule: rolling windows and calendar days in the contact's zone."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.policy.frequency import (
    FrequencyVerdict,
    counting_since,
    frequency_verdict,
    local_day_start,
    next_local_midnight,
)
from tasks.policy.settings import FrequencyCap, FrequencyCapWindow
from tests.properties import property_settings
from tests.zone_transitions import (
    EVERY_ZONE,
    RANGE_END,
    RANGE_START,
    offset_changes,
    walk_until_outside,
)

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
SANTIAGO = zoneinfo.ZoneInfo("America/Santiago")  # changes its clocks at midnight
LORD_HOWE = zoneinfo.ZoneInfo("Australia/Lord_Howe")
MICROSECOND = timedelta(microseconds=1)
DAY = 86400.0


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def rolling(max_messages: int, per_seconds: float) -> FrequencyCap:
    return FrequencyCap(max_messages, per_seconds)


def calendar_day(max_messages: int) -> FrequencyCap:
    return FrequencyCap(max_messages, None, FrequencyCapWindow.CALENDAR_DAY)


NOW = utc(2025, 6, 1, 12)


def test_rolling_allows_below_the_cap() -> None:
    sent = [NOW - timedelta(hours=5), NOW - timedelta(hours=1)]
    assert frequency_verdict(rolling(3, DAY), NEW_YORK, sent, NOW) == FrequencyVerdict(True, 2)


def test_rolling_capped_until_the_oldest_ages_out() -> None:
    sent = [NOW - timedelta(hours=1), NOW - timedelta(hours=20), NOW - timedelta(hours=5)]
    result = frequency_verdict(rolling(3, DAY), NEW_YORK, sent, NOW)
    assert result == FrequencyVerdict(False, 3, NOW + timedelta(hours=4))


def test_rolling_over_the_cap_waits_for_enough_to_age_out() -> None:
    # Five counted (transactional sends, or a race) against a cap of 3: three must age out.
    sent = [NOW - timedelta(hours=h) for h in (1, 2, 3, 10, 20)]
    result = frequency_verdict(rolling(3, DAY), NEW_YORK, sent, NOW)
    assert result == FrequencyVerdict(False, 5, NOW + timedelta(hours=21))


def test_rolling_boundary_a_send_exactly_per_seconds_ago_has_aged_out() -> None:
    sent = [NOW - timedelta(seconds=60)]
    assert frequency_verdict(rolling(1, 60), NEW_YORK, sent, NOW).allowed
    just_inside = [NOW - timedelta(seconds=60) + MICROSECOND]
    assert frequency_verdict(rolling(1, 60), NEW_YORK, just_inside, NOW) == FrequencyVerdict(
        False, 1, NOW + MICROSECOND
    )


def test_rolling_counts_sends_a_little_in_the_future() -> None:
    # Another worker's clock slightly ahead: the send happened, it counts.
    sent = [NOW + timedelta(seconds=2)]
    result = frequency_verdict(rolling(1, 60), NEW_YORK, sent, NOW)
    assert result == FrequencyVerdict(False, 1, NOW + timedelta(seconds=62))


def test_sends_in_other_offsets_are_the_same_instants() -> None:
    tokyo = zoneinfo.ZoneInfo("Asia/Tokyo")
    sent = [(NOW - timedelta(hours=1)).astimezone(tokyo)]
    result = frequency_verdict(rolling(1, 7200), NEW_YORK, sent, NOW.astimezone(tokyo))
    assert result == FrequencyVerdict(False, 1, NOW + timedelta(hours=1))
    assert result.retry_at is not None and result.retry_at.utcoffset() == timedelta(0)


def test_calendar_day_counts_the_local_date() -> None:
    at = utc(2025, 6, 1, 14)  # 10:00 EDT, June 1
    sent = [
        utc(2025, 6, 1, 3, 59),  # 23:59 EDT, May 31: yesterday
        utc(2025, 6, 1, 4),  # 00:00 EDT, June 1
        utc(2025, 6, 1, 13),  # 09:00 EDT
    ]
    assert frequency_verdict(calendar_day(3), NEW_YORK, sent, at) == FrequencyVerdict(True, 2)
    result = frequency_verdict(calendar_day(2), NEW_YORK, sent, at)
    assert result == FrequencyVerdict(False, 2, utc(2025, 6, 2, 4))  # next 00:00 EDT


@pytest.mark.parametrize(
    ("zone", "at", "midnight", "day_start"),
    [
        # New York, spring forward day: 23 hours long; next midnight at -04:00.
        (NEW_YORK, utc(2025, 3, 9, 12), utc(2025, 3, 10, 4), utc(2025, 3, 9, 5)),
        # New York, fall back day: 25 hours long.
        (NEW_YORK, utc(2025, 11, 2, 12), utc(2025, 11, 3, 5), utc(2025, 11, 2, 4)),
        # Santiago skips 00:00-01:00 on 2025-09-07: the day starts at the jump (01:00 -03).
        (SANTIAGO, utc(2025, 9, 6, 20), utc(2025, 9, 7, 4), utc(2025, 9, 6, 4)),
        (SANTIAGO, utc(2025, 9, 7, 12), utc(2025, 9, 8, 3), utc(2025, 9, 7, 4)),
        # Santiago falls back from 00:00 to 23:00 on 2025-04-06: the clock shows 23:00-24:00 of
        # April 5 twice, and April 6 begins when 00:00 finally shows, at -04:00.
        (SANTIAGO, utc(2025, 4, 5, 20), utc(2025, 4, 6, 4), utc(2025, 4, 5, 3)),
        (SANTIAGO, utc(2025, 4, 6, 3, 30), utc(2025, 4, 6, 4), utc(2025, 4, 5, 3)),
        # Lord Howe, 2025-10-05: 02:00 jumps to 02:30, a day of 23.5 hours (+10:30, then +11).
        (LORD_HOWE, utc(2025, 10, 5), utc(2025, 10, 5, 13), utc(2025, 10, 4, 13, 30)),
    ],
)
def test_local_midnights_on_days_clocks_change(
    zone: zoneinfo.ZoneInfo, at: datetime, midnight: datetime, day_start: datetime
) -> None:
    assert next_local_midnight(zone, at) == midnight
    assert local_day_start(zone, at) == day_start


def test_calendar_day_capped_on_the_spring_forward_day_retries_at_the_real_midnight() -> None:
    at = utc(2025, 9, 6, 20)  # Santiago, the evening before its midnight is skipped
    sent = [utc(2025, 9, 6, 15)]
    result = frequency_verdict(calendar_day(1), SANTIAGO, sent, at)
    assert result == FrequencyVerdict(False, 1, utc(2025, 9, 7, 4))


def test_counting_since() -> None:
    assert counting_since(rolling(3, 3600), NEW_YORK, NOW) == NOW - timedelta(hours=1)
    assert counting_since(calendar_day(3), NEW_YORK, NOW) == utc(2025, 6, 1, 4)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        frequency_verdict(rolling(1, 60), NEW_YORK, [], datetime(2025, 6, 1, 12))
    with pytest.raises(ValueError, match="sent_at must be an aware"):
        frequency_verdict(rolling(1, 60), NEW_YORK, [datetime(2025, 6, 1, 12)], NOW)


# Properties.
INSTANTS = st.integers(0, (RANGE_END - RANGE_START) // MICROSECOND - 1).map(
    lambda n: RANGE_START + n * MICROSECOND
)


@st.composite
def rolling_cases(draw: st.DrawFn) -> tuple[FrequencyCap, list[datetime], datetime]:
    per_seconds = draw(st.sampled_from([1.0, 60.0, 3600.0, DAY, 7 * DAY, 0.5]))
    cap = rolling(draw(st.integers(1, 5)), per_seconds)
    at = draw(INSTANTS)
    window = timedelta(seconds=per_seconds)
    offsets = st.floats(-1.2, 0.05).map(lambda fraction: fraction * window)
    sent = [at + offset for offset in draw(st.lists(offsets, max_size=8))]
    return cap, sent, at


@property_settings(400)
@given(rolling_cases())
def test_rolling_retry_is_the_first_allowed_instant(
    case: tuple[FrequencyCap, list[datetime], datetime],
) -> None:
    cap, sent, at = case
    result = frequency_verdict(cap, NEW_YORK, sent, at)
    window = timedelta(seconds=cap.per_seconds or 0)
    assert result.counted == sum(1 for s in sent if at - window < s)
    assert result.allowed is (result.counted < cap.max_messages)
    if result.allowed:
        assert result.retry_at is None
        return
    assert result.retry_at is not None and result.retry_at > at
    # At retry_at a send is allowed; a microsecond before it, still capped.
    assert frequency_verdict(cap, NEW_YORK, sent, result.retry_at).allowed
    assert not frequency_verdict(cap, NEW_YORK, sent, result.retry_at - MICROSECOND).allowed


@pytest.mark.parametrize("zone_name", EVERY_ZONE)
@property_settings(3)
@given(data=st.data())
def test_every_zone_local_day_bounds_agree_with_the_wall_clock(
    zone_name: str, data: st.DataObject
) -> None:
    zone = zoneinfo.ZoneInfo(zone_name)
    changes = offset_changes(zone_name)
    if changes and data.draw(st.booleans()):
        at = data.draw(st.sampled_from(changes)) + timedelta(
            seconds=data.draw(st.integers(-30 * 3600, 30 * 3600))
        )
    else:
        at = data.draw(INSTANTS)
    today = at.astimezone(zone).date()

    def local_date(instant: datetime) -> object:
        return instant.astimezone(zone).date()

    midnight = next_local_midnight(zone, at)
    assert local_date(midnight) > today
    assert local_date(midnight - MICROSECOND) <= today
    reference = walk_until_outside(zone, at, lambda wall: wall.date() <= today)
    assert reference - timedelta(minutes=1) < midnight <= reference

    start = local_day_start(zone, at)
    assert start <= at
    assert local_date(start) == today
    assert local_date(start - MICROSECOND) < today

    # A calendar-day cap of 1 with one send today: capped until that midnight.
    capped = frequency_verdict(calendar_day(1), zone, [start], at)
    assert capped == FrequencyVerdict(False, 1, midnight)
    assert frequency_verdict(calendar_day(1), zone, [start], midnight).allowed
