"""Quiet hours: fixtures on the days clocks change, and properties over every zone.

The properties compare the verdict with the wall clock itself: an instant is inside exactly
when its local wall time is in the window, and a deferred send's time is outside the window,
is the first such instant (a microsecond earlier is inside), and lies within a minute of where a
slow reference, walking minute by minute, first finds the window over.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.policy.quiet_hours import QuietHoursVerdict, quiet_hours_verdict, wall_time_in_window
from tests.properties import property_settings
from tests.zone_transitions import (
    EVERY_ZONE,
    ONE_MINUTE,
    RANGE_END,
    RANGE_START,
    offset_changes,
    walk_until_outside,
)

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
LORD_HOWE = zoneinfo.ZoneInfo("Australia/Lord_Howe")
KATHMANDU = zoneinfo.ZoneInfo("Asia/Kathmandu")
MICROSECOND = timedelta(microseconds=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def hm(text: str) -> time:
    return time.fromisoformat(text)


def verdict(start: str, end: str, zone: zoneinfo.ZoneInfo, at: datetime) -> QuietHoursVerdict:
    return quiet_hours_verdict(hm(start), hm(end), zone, at)


INSIDE = QuietHoursVerdict
OUTSIDE = QuietHoursVerdict(inside=False)


# America/New_York, 2025-03-09: 02:00 EST jumps to 03:00 EDT at 07:00 UTC.
# America/New_York, 2025-11-02: 02:00 EDT falls back to 01:00 EST at 06:00 UTC.
# Australia/Lord_Howe: +10:30 standard, +11:00 summer, a 30-minute change: 2025-04-06 02:00
# falls back to 01:30 (at 2025-04-05 15:00 UTC); 2025-10-05 02:00 jumps to 02:30 (at 2025-10-04
# 15:30 UTC). Asia/Kathmandu: +05:45 all year.
@pytest.mark.parametrize(
    ("start", "end", "zone", "at", "expected"),
    [
        # Spring forward, the window ends in the skipped hour: it ends at the jump (03:00 EDT).
        ("21:00", "02:30", NEW_YORK, utc(2025, 3, 9, 6, 30), INSIDE(True, utc(2025, 3, 9, 7))),
        ("21:00", "02:30", NEW_YORK, utc(2025, 3, 9, 6, 59, 59), INSIDE(True, utc(2025, 3, 9, 7))),
        ("21:00", "02:30", NEW_YORK, utc(2025, 3, 9, 7), OUTSIDE),
        # Spring forward, the window starts in the skipped hour: it starts at the jump.
        ("02:30", "08:00", NEW_YORK, utc(2025, 3, 9, 6, 59, 59), OUTSIDE),
        ("02:30", "08:00", NEW_YORK, utc(2025, 3, 9, 7), INSIDE(True, utc(2025, 3, 9, 12))),
        # A window wholly inside the skipped hour never holds that night.
        ("02:10", "02:50", NEW_YORK, utc(2025, 3, 9, 6, 59, 59), OUTSIDE),
        ("02:10", "02:50", NEW_YORK, utc(2025, 3, 9, 7), OUTSIDE),
        # An ordinary night across the change: 07:00 EDT, not 07:00 at the evening's offset.
        ("22:00", "07:00", NEW_YORK, utc(2025, 3, 9, 4), INSIDE(True, utc(2025, 3, 9, 11))),
        # Fall back, the window ends in the repeated hour: at its first showing (01:30 EDT)...
        ("21:00", "01:30", NEW_YORK, utc(2025, 11, 2, 3), INSIDE(True, utc(2025, 11, 2, 5, 30))),
        ("21:00", "01:30", NEW_YORK, utc(2025, 11, 2, 5, 45), OUTSIDE),  # 01:45 EDT
        # ...and the wall clock shows 01:00-01:30 again (EST): inside again, by the wall clock.
        ("21:00", "01:30", NEW_YORK, utc(2025, 11, 2, 6), INSIDE(True, utc(2025, 11, 2, 6, 30))),
        ("21:00", "01:30", NEW_YORK, utc(2025, 11, 2, 6, 30), OUTSIDE),
        # Fall back, the window starts in the repeated hour: 01:30 EDT starts it, the jump back
        # to 01:00 EST leaves it, 01:30 EST starts it again.
        ("01:30", "08:00", NEW_YORK, utc(2025, 11, 2, 5, 30), INSIDE(True, utc(2025, 11, 2, 6))),
        ("01:30", "08:00", NEW_YORK, utc(2025, 11, 2, 6, 15), OUTSIDE),
        ("01:30", "08:00", NEW_YORK, utc(2025, 11, 2, 6, 30), INSIDE(True, utc(2025, 11, 2, 13))),
        # An ordinary night across the change: 07:00 EST.
        ("22:00", "07:00", NEW_YORK, utc(2025, 11, 2, 3), INSIDE(True, utc(2025, 11, 2, 12))),
        # Lord Howe, 30-minute spring forward: the end 02:15 never shows; ends at 02:30 (+11).
        ("22:00", "02:15", LORD_HOWE, utc(2025, 10, 4, 15), INSIDE(True, utc(2025, 10, 4, 15, 30))),
        ("02:15", "06:00", LORD_HOWE, utc(2025, 10, 4, 15, 29), OUTSIDE),  # 01:59 +10:30
        ("02:15", "06:00", LORD_HOWE, utc(2025, 10, 4, 15, 30), INSIDE(True, utc(2025, 10, 4, 19))),
        # Lord Howe, 30-minute fall back: 01:45 shows at +11 first, then 01:30-02:00 repeats.
        ("21:00", "01:45", LORD_HOWE, utc(2025, 4, 5, 14), INSIDE(True, utc(2025, 4, 5, 14, 45))),
        ("21:00", "01:45", LORD_HOWE, utc(2025, 4, 5, 15), INSIDE(True, utc(2025, 4, 5, 15, 15))),
        ("22:00", "08:00", LORD_HOWE, utc(2025, 4, 5, 12), INSIDE(True, utc(2025, 4, 5, 21, 30))),
        # Kathmandu, +05:45.
        ("21:00", "08:00", KATHMANDU, utc(2025, 6, 1, 15, 14), OUTSIDE),  # 20:59
        (
            "21:00",
            "08:00",
            KATHMANDU,
            utc(2025, 6, 1, 15, 15),
            INSIDE(True, utc(2025, 6, 2, 2, 15)),
        ),
        (
            "21:00",
            "08:00",
            KATHMANDU,
            utc(2025, 6, 2, 2, 14, 59),
            INSIDE(True, utc(2025, 6, 2, 2, 15)),
        ),
        ("21:00", "08:00", KATHMANDU, utc(2025, 6, 2, 2, 15), OUTSIDE),
        ("12:00", "13:00", KATHMANDU, utc(2025, 6, 1, 6, 30), INSIDE(True, utc(2025, 6, 1, 7, 15))),
        ("12:00", "13:00", KATHMANDU, utc(2025, 6, 1, 7, 15), OUTSIDE),
        # Within a day, and its edges: start inclusive, end exclusive.
        ("12:00", "13:00", NEW_YORK, utc(2025, 6, 1, 16), INSIDE(True, utc(2025, 6, 1, 17))),
        ("12:00", "13:00", NEW_YORK, utc(2025, 6, 1, 15, 59, 59), OUTSIDE),
        ("12:00", "13:00", NEW_YORK, utc(2025, 6, 1, 17), OUTSIDE),
        # start == end: an empty window.
        ("08:00", "08:00", NEW_YORK, utc(2025, 6, 1, 12), OUTSIDE),
        ("00:00", "00:00", NEW_YORK, utc(2025, 6, 1, 4, 30), OUTSIDE),
    ],
)
def test_fixtures(
    start: str, end: str, zone: zoneinfo.ZoneInfo, at: datetime, expected: QuietHoursVerdict
) -> None:
    assert verdict(start, end, zone, at) == expected


def test_an_instant_in_any_offset_gives_the_same_verdict() -> None:
    at = utc(2025, 3, 9, 6, 30)
    in_tokyo = at.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert verdict("21:00", "02:30", NEW_YORK, in_tokyo) == verdict("21:00", "02:30", NEW_YORK, at)
    assert verdict("21:00", "02:30", NEW_YORK, in_tokyo).ends_at.tzinfo is UTC  # type: ignore[union-attr]


def test_naive_instants_and_aware_wall_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        quiet_hours_verdict(hm("21:00"), hm("08:00"), NEW_YORK, datetime(2025, 6, 1, 12))
    with pytest.raises(ValueError, match="naive"):
        quiet_hours_verdict(time(21, tzinfo=UTC), hm("08:00"), NEW_YORK, utc(2025, 6, 1, 12))


@pytest.mark.parametrize(
    ("start", "end", "wall", "inside"),
    [
        ("21:00", "08:00", "21:00", True),
        ("21:00", "08:00", "23:59", True),
        ("21:00", "08:00", "00:00", True),
        ("21:00", "08:00", "07:59", True),
        ("21:00", "08:00", "08:00", False),
        ("21:00", "08:00", "20:59", False),
        ("12:00", "13:00", "12:00", True),
        ("12:00", "13:00", "13:00", False),
        ("00:00", "00:01", "00:00", True),
        ("23:59", "00:00", "23:59", True),
        ("23:59", "00:00", "00:00", False),
        ("06:00", "06:00", "06:00", False),
    ],
)
def test_wall_time_in_window(start: str, end: str, wall: str, inside: bool) -> None:
    assert wall_time_in_window(hm(start), hm(end), hm(wall)) is inside


# The properties. The reference reads the wall clock with integer arithmetic, independent of
# the code under test.
def reference_inside(start_minute: int, end_minute: int, wall: datetime) -> bool:
    position = (wall.hour * 60 + wall.minute) * 60_000_000 + wall.second * 1_000_000
    position += wall.microsecond
    start, end = start_minute * 60_000_000, end_minute * 60_000_000
    if start < end:
        return start <= position < end
    if start > end:
        return position >= start or position < end
    return False


def check_against_the_wall_clock(
    zone: zoneinfo.ZoneInfo, start_minute: int, end_minute: int, at: datetime
) -> None:
    def inside(wall: datetime) -> bool:
        return reference_inside(start_minute, end_minute, wall)

    def inside_at(instant: datetime) -> bool:
        return inside(instant.astimezone(zone).replace(tzinfo=None))

    start = time(start_minute // 60, start_minute % 60)
    end = time(end_minute // 60, end_minute % 60)
    result = quiet_hours_verdict(start, end, zone, at)
    # No instant judged outside is inside, and none judged inside is outside.
    assert result.inside is inside_at(at)
    if not result.inside:
        assert result.ends_at is None
        return
    ends_at = result.ends_at
    assert ends_at is not None and ends_at.utcoffset() == timedelta(0)
    # The deferred instant is outside, and the window really holds until then.
    assert not inside_at(ends_at)
    assert ends_at > at and inside_at(ends_at - MICROSECOND)
    # The slow reference agrees to the minute: the first minute step outside is at or after
    # ends_at, and every step before it was inside.
    first_step_outside = walk_until_outside(zone, at, inside)
    assert first_step_outside - ONE_MINUTE < ends_at <= first_step_outside


MINUTES = st.integers(0, 1439)
SPAN_MICROSECONDS = (RANGE_END - RANGE_START) // MICROSECOND - 1


@st.composite
def scenarios(draw: st.DrawFn, zone_name: str) -> tuple[int, int, datetime]:
    """A window and an instant in 2025-2026; for zones that change offset, often near a change
    with the window's start or end near the wall times on either side of the jump."""
    zone = zoneinfo.ZoneInfo(zone_name)
    changes = offset_changes(zone_name)
    if not changes or draw(st.integers(0, 3)) == 0:
        at = RANGE_START + draw(st.integers(0, SPAN_MICROSECONDS)) * MICROSECOND
        return draw(MINUTES), draw(MINUTES), at
    change = draw(st.sampled_from(changes))
    before = (change - MICROSECOND).astimezone(zone)
    after = change.astimezone(zone)
    anchors = [before.hour * 60 + before.minute + 1, after.hour * 60 + after.minute]
    near = st.builds(
        lambda anchor, delta: (anchor + delta) % 1440,
        st.sampled_from(anchors),
        st.one_of(st.integers(-2, 2), st.integers(-120, 120)),
    )
    start = draw(st.one_of(near, MINUTES))
    end = draw(st.one_of(near, MINUTES))
    seconds = draw(st.one_of(st.integers(-7200, 7200), st.integers(-26 * 3600, 26 * 3600)))
    at = change + timedelta(seconds=seconds, microseconds=draw(st.sampled_from([0, 0, 1, 500_000])))
    return start, end, at


@pytest.mark.parametrize("zone_name", EVERY_ZONE)
@property_settings(6)
@given(data=st.data())
def test_every_zone_agrees_with_the_wall_clock(zone_name: str, data: st.DataObject) -> None:
    """Every zone of zoneinfo.available_timezones(), a few examples each (about 600 zones)."""
    start, end, at = data.draw(scenarios(zone_name))
    check_against_the_wall_clock(zoneinfo.ZoneInfo(zone_name), start, end, at)


@property_settings(400)
@given(st.sampled_from(EVERY_ZONE).flatmap(lambda name: st.tuples(st.just(name), scenarios(name))))
def test_random_zones_agree_with_the_wall_clock(
    case: tuple[str, tuple[int, int, datetime]],
) -> None:
    zone_name, scenario = case
    check_against_the_wall_clock(zoneinfo.ZoneInfo(zone_name), *scenario)
