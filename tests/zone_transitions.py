"""Test helpers for time zones: every zone, its offset changes, and a minute-walking reference.

The reference is deliberately slow and simple (it reads the wall clock one minute at a time);
the production code must agree with it without ever walking.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

EVERY_ZONE = tuple(sorted(zoneinfo.available_timezones()))
ONE_MINUTE = timedelta(minutes=1)
RANGE_START = datetime(2025, 1, 1, tzinfo=UTC)
RANGE_END = datetime(2027, 1, 1, tzinfo=UTC)  # exclusive: instants up to 2026-12-31


def offset_at(zone: zoneinfo.ZoneInfo, at: datetime) -> timedelta | None:
    return at.astimezone(zone).utcoffset()


@functools.cache
def offset_changes(zone_name: str) -> tuple[datetime, ...]:
    """The instants in 2025-2026 at which the zone's UTC offset changes (whole seconds).

    Found by comparing the offset at each UTC midnight and bisecting the day it changed in (tz
    data never changes an offset twice in one day; tests/test_policy_wall_clock.py checks it).
    """
    zone = zoneinfo.ZoneInfo(zone_name)
    changes = []
    day = RANGE_START
    while day < RANGE_END:
        following = day + timedelta(days=1)
        if offset_at(zone, day) != offset_at(zone, following):
            low, high = 0, 86400
            while high - low > 1:
                middle = (low + high) // 2
                if offset_at(zone, day + timedelta(seconds=middle)) == offset_at(zone, day):
                    low = middle
                else:
                    high = middle
            changes.append(day + timedelta(seconds=high))
        day = following
    return tuple(changes)


def walk_until_outside(
    zone: zoneinfo.ZoneInfo,
    at: datetime,
    inside: Callable[[datetime], bool],
    limit: timedelta = timedelta(days=3),
) -> datetime:
    """The first of at, at + 1 min, at + 2 min, ... whose local wall time is not `inside`."""
    step = at
    while inside(step.astimezone(zone).replace(tzinfo=None)):
        step += ONE_MINUTE
        assert step - at <= limit, "the reference walked for three days"
    return step
