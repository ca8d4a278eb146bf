"""Frequency caps, the rule: may one more message go to this contact now, and if not, when.

The counting lives in the database; this is the rule over the send times it counted.

- Rolling window (`per_seconds`): a send at s counts while s > at - per_seconds, so it ages out
  at exactly s + per_seconds. With n counted sends and a cap of m, the count falls below m when
  the (n - m + 1)th oldest ages out (the oldest, when n == m).
- Calendar day: a send counts when its local date in the contact's zone is the local date of
  `at`. The count resets at the next local midnight: the first instant whose local date is
  later, which on a day whose midnight is skipped (spring forward at 00:00) is the jump, and on
  one whose midnight is preceded by a fall back at 24:00 is the first 00:00 actually shown.

Sends at or after `counting_since` are all the counter needs to load; sends later than `at`
(another worker's clock a little ahead) count too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

from tasks.policy.settings import FrequencyCap, FrequencyCapWindow
from tasks.policy.wall_clock import first_instant_outside, require_aware, wall_time

FREQUENCY_CAPPED_REASON = "frequency_capped"
# Far enough back that the local date is earlier in every zone (offsets span 26 hours).
_BEFORE_ANY_LOCAL_DAY = timedelta(hours=50)


@dataclass(frozen=True)
class FrequencyVerdict:
    """allowed; counted: sends in the window at `at`; retry_at (UTC, when capped)."""

    allowed: bool
    counted: int
    retry_at: datetime | None = None


def next_local_midnight(zone: tzinfo, at: datetime) -> datetime:
    """The first instant after the aware `at` whose local date in `zone` is later, in UTC."""
    require_aware(at)
    today = wall_time(zone, at).date()
    return first_instant_outside(
        zone,
        at,
        inside=lambda wall: wall.date() <= today,
        leaves_at=lambda wall: datetime.combine(today + timedelta(days=1), time()),
    )


def local_day_start(zone: tzinfo, at: datetime) -> datetime:
    """The first instant whose local date in `zone` is the local date of the aware `at`, in UTC.

    Usually local midnight; the jump when midnight is skipped; the first showing of 00:00 when
    a fall back repeats it.
    """
    require_aware(at)
    today = wall_time(zone, at).date()
    return first_instant_outside(
        zone,
        at - _BEFORE_ANY_LOCAL_DAY,
        inside=lambda wall: wall.date() < today,
        leaves_at=lambda wall: datetime.combine(today, time()),
    )


def counting_since(cap: FrequencyCap, zone: tzinfo, at: datetime) -> datetime:
    """The earliest send time that can count at `at` (UTC): load sends at or after it.

    Rolling: at - per_seconds (a send exactly then has already aged out, and the verdict does
    not count it). Calendar day: the local day's start.
    """
    require_aware(at)
    if cap.window is FrequencyCapWindow.CALENDAR_DAY:
        return local_day_start(zone, at)
    assert cap.per_seconds is not None
    return at.astimezone(UTC) - timedelta(seconds=cap.per_seconds)


def frequency_verdict(
    cap: FrequencyCap, zone: tzinfo, sent_at: Iterable[datetime], at: datetime
) -> FrequencyVerdict:
    """Whether one more send to the contact at the aware `at` stays within `cap`.

    `sent_at`: the contact's counted send times (aware; any order, older ones are ignored).
    `zone`: the contact's zone (only a calendar-day cap uses it). When capped, `retry_at` is
    the first instant at which a send is allowed again if nothing else is sent: when enough
    of the oldest sends age out (rolling), or the next local midnight (calendar day).
    """
    require_aware(at)
    sends = list(sent_at)
    for send in sends:
        require_aware(send, "sent_at")
    if cap.window is FrequencyCapWindow.CALENDAR_DAY:
        today = wall_time(zone, at).date()
        counted = sum(1 for send in sends if wall_time(zone, send).date() == today)
        if counted < cap.max_messages:
            return FrequencyVerdict(allowed=True, counted=counted)
        return FrequencyVerdict(False, counted, next_local_midnight(zone, at))

    assert cap.per_seconds is not None
    window = timedelta(seconds=cap.per_seconds)
    at_utc = at.astimezone(UTC)
    in_window = sorted(send.astimezone(UTC) for send in sends if send > at_utc - window)
    counted = len(in_window)
    if counted < cap.max_messages:
        return FrequencyVerdict(allowed=True, counted=counted)
    return FrequencyVerdict(False, counted, in_window[counted - cap.max_messages] + window)
