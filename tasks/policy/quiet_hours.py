"""Quiet hours: is an instant inside the contact's local no-send window, and when does it end.

The window is a span of local wall times, start inclusive, end exclusive: 12:00-13:00 within a
day, or 21:00-08:00 wrapping midnight (end before start). start == end is an empty window: it
never holds an instant (tenant settings reject it, since a tenant who writes it means either
"always" or "never" and we cannot tell which).

An instant is inside when its local wall time is inside, nothing more: the wall clock decides.
When inside, the window ends at the first instant at or after it whose wall time is outside.
So across a spring-forward gap an end time that never shows ends the window at the jump (the
clock leaves the window there), and across a fall-back an end time that shows twice ends it at
its first showing. The same rule means a fall-back can take the wall clock back into the window
(21:00-01:30 on a night whose 01:00-02:00 repeats: 01:00-01:30 is inside twice), and one that
jumps back past the start leaves it (01:30-08:00 on that night: outside from the jump until
01:30 shows again). Both are what a person reading the wall clock would say.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

from tasks.policy.wall_clock import first_instant_outside, require_aware


@dataclass(frozen=True)
class QuietHoursVerdict:
    """inside: the instant is in the window; ends_at (UTC, when inside): when it may send."""

    inside: bool
    ends_at: datetime | None = None


def _require_naive(value: time, name: str) -> None:
    if value.tzinfo is not None:
        raise ValueError(f"quiet hours {name} is a local wall time and must be naive: {value!r}")


def wall_time_in_window(start: time, end: time, wall: time) -> bool:
    """Whether the wall time `wall` is in [start, end), wrapping midnight when end < start."""
    if start < end:
        return start <= wall < end
    if start > end:
        return wall >= start or wall < end
    return False


def quiet_hours_verdict(start: time, end: time, zone: tzinfo, at: datetime) -> QuietHoursVerdict:
    """Whether the aware instant `at` is inside the window [start, end) in `zone`, and its end.

    `start` and `end` are naive local wall times. When inside, `ends_at` is the first instant
    at or after `at` whose wall time in `zone` is outside the window, in UTC: exact to the
    microsecond, found in a few zone look-ups. Raises ValueError for a naive `at` or an aware
    `start`/`end`.
    """
    require_aware(at)
    _require_naive(start, "start")
    _require_naive(end, "end")

    def inside(wall: datetime) -> bool:
        return wall_time_in_window(start, end, wall.time())

    def leaves_at(wall: datetime) -> datetime:
        # Inside a wrapping window, before midnight the end is tomorrow's.
        day = wall.date() + timedelta(days=1) if end < start <= wall.time() else wall.date()
        return datetime.combine(day, end)

    at_utc = at.astimezone(UTC)
    ends_at = first_instant_outside(zone, at_utc, inside, leaves_at)
    if ends_at == at_utc:
        return QuietHoursVerdict(inside=False)
    return QuietHoursVerdict(inside=True, ends_at=ends_at)
