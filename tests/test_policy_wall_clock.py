"""The wall clock: the first instant it leaves a span, and the tz-data assumption it rests on."""

from __future__ import annotations

import itertools
import zoneinfo
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import _zoneinfo  # the pure-Python implementation, which exposes transitions

import pytest

from tasks.policy.wall_clock import MAX_SEARCH_SPAN, first_instant_outside, wall_time
from tests.zone_transitions import EVERY_ZONE, offset_changes

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
SINCE_1970 = datetime(1970, 1, 1, tzinfo=UTC).timestamp()


def test_no_zone_changes_its_offset_twice_within_the_search_span() -> None:
    """The bisection in wall_clock finds the one offset change in an interval of at most 3 days.

    That holds when no zone changes its UTC offset twice within 3 days: checked here on every
    transition the installed tz database lists since 1970 (TZif files list them to 2037; the
    yearly rule after that changes twice a year). The closest pair today is 7 days apart.
    """
    closest: tuple[float, str] = (float("inf"), "")
    for name in EVERY_ZONE:
        zone = _zoneinfo.ZoneInfo.no_cache(name)
        previous_offset, changes = None, []
        for instant, info in zip(zone._trans_utc, zone._ttinfos, strict=True):
            if previous_offset is not None and info.utcoff != previous_offset:
                changes.append(instant)
            previous_offset = info.utcoff
        changes = [c for c in changes if c >= SINCE_1970]
        for earlier, later in itertools.pairwise(changes):
            closest = min(closest, (later - earlier, name))
    assert closest[0] > MAX_SEARCH_SPAN.total_seconds(), closest


def test_the_2025_2026_helper_finds_the_known_changes() -> None:
    assert offset_changes("America/New_York")[:2] == (
        datetime(2025, 3, 9, 7, tzinfo=UTC),
        datetime(2025, 11, 2, 6, tzinfo=UTC),
    )
    assert offset_changes("Asia/Kathmandu") == ()
    assert len(offset_changes("Australia/Lord_Howe")) == 4


class CountingZone(tzinfo):
    """A zone that counts how often it is asked to convert an instant (fromutc)."""

    def __init__(self, inner: zoneinfo.ZoneInfo) -> None:
        self.inner = inner
        self.conversions = 0

    def fromutc(self, dt: datetime) -> datetime:
        self.conversions += 1
        return self.inner.fromutc(dt.replace(tzinfo=self.inner)).replace(tzinfo=self)

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return self.inner.utcoffset(dt.replace(tzinfo=self.inner) if dt else None)

    def dst(self, dt: datetime | None) -> timedelta | None:
        return self.inner.dst(dt.replace(tzinfo=self.inner) if dt else None)

    def tzname(self, dt: datetime | None) -> str | None:
        return self.inner.tzname(dt.replace(tzinfo=self.inner) if dt else None)


def _until_eight(zone: tzinfo, at: datetime) -> datetime:
    """Leave the span 'before 08:00 on the day of `at`'."""
    day = wall_time(zone, at).date()
    return first_instant_outside(
        zone,
        at,
        inside=lambda wall: wall.date() == day and wall.hour < 8,
        leaves_at=lambda wall: datetime.combine(day, datetime.min.time()) + timedelta(hours=8),
    )


def test_a_plain_day_costs_two_conversions() -> None:
    zone = CountingZone(NEW_YORK)
    assert _until_eight(zone, datetime(2025, 6, 1, 5, tzinfo=UTC)) == datetime(
        2025, 6, 1, 12, tzinfo=UTC
    )
    # One for the helper's own `day`, then the wall time at `at` and the offset at the end.
    assert zone.conversions == 3


def test_across_an_offset_change_it_bisects_never_walks() -> None:
    zone = CountingZone(NEW_YORK)
    # 00:00 EST on the spring-forward day, to 08:00 EDT.
    assert _until_eight(zone, datetime(2025, 3, 9, 5, tzinfo=UTC)) == datetime(
        2025, 3, 9, 12, tzinfo=UTC
    )
    # Bisection over seconds of a ~7-hour interval: about log2(25200) = 15 look-ups, not 420
    # (minutes) or 25200 (seconds).
    assert zone.conversions <= 24


def test_an_outside_instant_is_its_own_answer() -> None:
    at = datetime(2025, 6, 1, 13, tzinfo=UTC)  # 09:00 EDT
    assert _until_eight(NEW_YORK, at) == at


def test_naive_instants_and_runaway_spans_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        _until_eight(NEW_YORK, datetime(2025, 6, 1, 5))
    with pytest.raises(ValueError, match="within 3 days"):
        first_instant_outside(
            NEW_YORK,
            datetime(2025, 6, 1, tzinfo=UTC),
            inside=lambda wall: True,
            leaves_at=lambda wall: wall + timedelta(days=4),
        )
