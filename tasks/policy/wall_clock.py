"""How a zone's wall clock moves: the first instant at which it leaves a span of wall times.

Between two UTC offset changes the wall clock runs with UTC, so the instant it reaches a wall
time is that wall time minus the offset. At a change it jumps: forward (spring forward, the
skipped times never show) or back (fall back, times show twice). Quiet hours and calendar days
both ask "when does the wall clock first show a time outside this span?", answered here exactly
and in a handful of zone look-ups, never by stepping through minutes.

Offset changes are found by bisection on whole seconds (tz database transitions are whole
seconds) between two instants at most about three days apart. That finds the one change in the
interval; it relies on no zone changing its offset twice within three days, which holds for
every zone of the tz database since 1970 (the closest pair is 7 days apart, America/Recife in
2000). tests/test_policy_wall_clock.py checks it against the installed database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_SECOND = timedelta(seconds=1)
# A wall-time span of at most a day meets at most one offset change; allow for a few.
MAX_OFFSET_CHANGES = 8
# The longest interval searched for an offset change at once: tz data changes no zone's offset
# twice within it (see the module docstring).
MAX_SEARCH_SPAN = timedelta(days=3)


def require_aware(at: datetime, name: str = "at") -> None:
    """Raise ValueError for a naive datetime: an instant must say its UTC offset."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (with a UTC offset), got {at!r}")


def wall_time(zone: tzinfo, at: datetime) -> datetime:
    """The naive local wall time in `zone` at the aware instant `at`."""
    return at.astimezone(zone).replace(tzinfo=None)


def _offset_at_second(zone: tzinfo, second: int) -> timedelta | None:
    return (EPOCH + timedelta(seconds=second)).astimezone(zone).utcoffset()


def _first_offset_change(zone: tzinfo, after: datetime, until: datetime) -> datetime:
    """The first whole second in (after, until] whose offset differs from the one at `after`.

    The caller knows the offset at `until` differs; there is one change in between.
    """
    offset = after.astimezone(zone).utcoffset()
    low = (after - EPOCH) // ONE_SECOND  # floor: same offset as `after`
    high = -((EPOCH - until) // ONE_SECOND)  # ceil: same offset as `until`
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at_second(zone, middle) == offset:
            low = middle
        else:
            high = middle
    return EPOCH + timedelta(seconds=high)


def first_instant_outside(
    zone: tzinfo,
    at: datetime,
    inside: Callable[[datetime], bool],
    leaves_at: Callable[[datetime], datetime],
) -> datetime:
    """The first instant at or after `at` whose local wall time in `zone` is not `inside`.

    `inside(wall)` says whether a naive wall time is in the span. `leaves_at(wall)`, for a wall
    time inside, is the first wall time at or after it that is outside, as a clock running on
    without offset changes would reach it (for example the window's end wall time); the span
    must hold every wall time from `wall` up to it, and it must lie less than 3 days ahead
    (else ValueError). Returns `at` (as UTC) when its own wall time is outside. The answer is in
    UTC.

    Offset changes are followed: a spring-forward gap that jumps over the end ends the span at
    the jump; a fall-back that jumps out of the span ends it at the jump; one that jumps back
    into it goes on from the new wall time.
    """
    require_aware(at)
    cursor = at.astimezone(UTC)
    for _ in range(MAX_OFFSET_CHANGES):
        local = cursor.astimezone(zone)
        wall = local.replace(tzinfo=None)
        if not inside(wall):
            return cursor
        offset = local.utcoffset()
        assert offset is not None
        candidate = (leaves_at(wall) - offset).replace(tzinfo=UTC)
        if not cursor < candidate <= cursor + MAX_SEARCH_SPAN:
            raise ValueError(f"leaves_at({wall}) must be after it and within 3 days")
        if candidate.astimezone(zone).utcoffset() == offset:
            return candidate
        cursor = _first_offset_change(zone, cursor, candidate)
    raise RuntimeError(f"{zone} changed its offset more than {MAX_OFFSET_CHANGES} times in a span")
