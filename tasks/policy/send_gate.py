"""The send policy at the moment of a send: what quiet hours and frequency caps decide for one
contact's SMS, as a plain result the engine turns into rows. No I/O: the caller supplies the
tenant's parsed policy, the contact, the database's clock and (for caps) the counted sends.

Every decision says itself on the execution row's `result`:
- `{"deferred": "quiet_hours", "until": ..., "timezone": ..., "timezone_source": ...}`: the
  contact stays WAITING at the send node, due when the window ends (the dispatcher runs it then).
- `{"skipped": "quiet_hours", ...}`: the tenant chose `skip`; the journey goes on.
- `{"skipped": "frequency_capped", "counted": n, "max_messages": m, ...}` or
  `{"deferred": "frequency_capped", "until": ...}` likewise for the cap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tasks.policy.frequency import FREQUENCY_CAPPED_REASON, frequency_verdict
from tasks.policy.quiet_hours import quiet_hours_verdict
from tasks.policy.settings import (
    FrequencyCap,
    FrequencyCapAction,
    QuietHoursAction,
    TenantSendPolicy,
)
from tasks.policy.timezones import ContactTimeZone

QUIET_HOURS_REASON = "quiet_hours"


@dataclass(frozen=True)
class HeldSend:
    """The send does not go now: deferred until `until` (UTC), or skipped when `until` is None.
    `rule` is quiet_hours or frequency_capped; `result` goes on the execution row."""

    rule: str
    until: datetime | None
    result: dict[str, Any]

    @property
    def action(self) -> str:
        return "deferred" if self.until is not None else "skipped"


def _zone_result(zone: ContactTimeZone) -> dict[str, Any]:
    result: dict[str, Any] = {"timezone": zone.name, "timezone_source": zone.source.value}
    if zone.warnings:
        result["timezone_warnings"] = [str(w) for w in zone.warnings]
    return result


def quiet_hours_hold(
    policy: TenantSendPolicy, zone: ContactTimeZone, at: datetime
) -> HeldSend | None:
    """None when the send may go at `at`; else deferred to the window's end, or skipped."""
    quiet = policy.quiet_hours
    if quiet is None:
        return None
    verdict = quiet_hours_verdict(quiet.start, quiet.end, zone.zone, at)
    if not verdict.inside:
        return None
    result = _zone_result(zone)
    if quiet.action is QuietHoursAction.SKIP:
        return HeldSend(QUIET_HOURS_REASON, None, {"skipped": QUIET_HOURS_REASON, **result})
    assert verdict.ends_at is not None
    until = verdict.ends_at.astimezone(UTC)
    return HeldSend(
        QUIET_HOURS_REASON,
        until,
        {"deferred": QUIET_HOURS_REASON, "until": until.isoformat(), **result},
    )


def frequency_cap_hold(
    cap: FrequencyCap, zone: ContactTimeZone, sent_at: Iterable[datetime], at: datetime
) -> HeldSend | None:
    """None when one more send stays within the cap; else skipped, or deferred until the count
    falls below the cap (the oldest counted send ages out, or the next local midnight)."""
    verdict = frequency_verdict(cap, zone.zone, sent_at, at)
    if verdict.allowed:
        return None
    facts: dict[str, Any] = {"counted": verdict.counted, "max_messages": cap.max_messages}
    if cap.action is FrequencyCapAction.DEFER and verdict.retry_at is not None:
        until = verdict.retry_at.astimezone(UTC)
        return HeldSend(
            FREQUENCY_CAPPED_REASON,
            until,
            {"deferred": FREQUENCY_CAPPED_REASON, "until": until.isoformat(), **facts},
        )
    return HeldSend(FREQUENCY_CAPPED_REASON, None, {"skipped": FREQUENCY_CAPPED_REASON, **facts})
