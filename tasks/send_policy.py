"""The tenant's send policy applied to one batch's sends: quiet hours (pure, per contact) and
frequency caps (counted in the database, in the transaction of the step's write).

The rules are plain functions in tasks/policy/; the counted sends are SQL in
db/send_counters.py. This module joins them for the engine: it parses the tenant's settings
once per batch, resolves each contact's zone (counting the fallbacks from invalid zones), and
checks-and-counts a batch's capped sends under the contacts' locks.
"""

from __future__ import annotations

import logging
import uuid
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from db import send_counters
from db.step_store import StepState
from tasks import metrics
from tasks.errors import InvalidTenantSettings
from tasks.lookups import TenantRecord
from tasks.node_config import NodeConfig, SendSmsConfig
from tasks.policy.frequency import counting_since
from tasks.policy.send_gate import (
    HeldSend,
    frequency_cap_hold,
    quiet_hours_hold,
)
from tasks.policy.settings import (
    FrequencyCapWindow,
    TenantSendPolicy,
    parse_tenant_send_policy,
)
from tasks.policy.timezones import (
    DEFAULT_TIME_ZONE,
    ContactTimeZone,
    TimeZoneSource,
    resolve_contact_time_zone,
)

log = logging.getLogger("journey_worker.send_policy")

# The PAUSED reason of a send held because the tenant's settings do not parse; tenant_updated
# releases it once upstream fixes them.
INVALID_TENANT_SETTINGS = "invalid_tenant_settings"
UTC_ZONE = ContactTimeZone(zoneinfo.ZoneInfo(DEFAULT_TIME_ZONE), TimeZoneSource.DEFAULT)


@dataclass(frozen=True)
class CapRequest:
    """One send that counts against the cap, if it goes."""

    state: StepState
    message_id: uuid.UUID


class BatchSendPolicy:
    """The tenant's policy for one batch. An unparsable settings object holds sends (PAUSED,
    `invalid_tenant_settings`) rather than send without the rules the tenant asked for."""

    def __init__(
        self, policy: TenantSendPolicy, error: InvalidTenantSettings | None = None
    ) -> None:
        self.policy = policy
        self.error = error
        # Each journey contact's zone, resolved once per batch: quiet hours and a calendar-day
        # cap both need it, and each fallback is logged and counted once.
        self._zones: dict[uuid.UUID, ContactTimeZone] = {}

    @classmethod
    def for_tenant(cls, tenant: TenantRecord | None) -> BatchSendPolicy:
        if tenant is None:
            return cls(TenantSendPolicy())
        try:
            return cls(parse_tenant_send_policy(tenant.settings))
        except InvalidTenantSettings as exc:
            log.error("tenant settings invalid, sends held tenant_id=%s: %s", tenant.id, exc)
            return cls(TenantSendPolicy(), exc)

    @property
    def applies(self) -> bool:
        return (
            self.error is not None
            or self.policy.quiet_hours is not None
            or self.policy.frequency_cap is not None
        )

    def zone(self, state: StepState) -> ContactTimeZone:
        known = self._zones.get(state.id)
        if known is not None:
            return known
        zone = resolve_contact_time_zone(state.attributes, state.phone, self.policy.timezone)
        self._zones[state.id] = zone
        for warning in zone.warnings:
            # Never stops a send: the next source is used, and an operator sees the count.
            metrics.TIMEZONE_FALLBACKS.labels(warning.source.value).inc()
            log.warning(
                "%s, using %s (%s) journey_contact_id=%s",
                warning,
                zone.name,
                zone.source.value,
                state.id,
            )
        return zone

    def quiet_hours(self, state: StepState) -> HeldSend | None:
        if self.policy.quiet_hours is None:
            return None
        return quiet_hours_hold(self.policy, self.zone(state), state.db_now)

    def caps(self, config: NodeConfig) -> bool:
        """Whether this node's sends count against the cap: transactional ones never do."""
        transactional = isinstance(config, SendSmsConfig) and config.transactional
        return self.policy.frequency_cap is not None and not transactional

    def check_and_count(
        self, connection: Connection, tenant_id: uuid.UUID, sends: Sequence[CapRequest]
    ) -> tuple[dict[uuid.UUID, HeldSend | None], set[uuid.UUID]]:
        """Inside the caller's transaction: lock the contacts, count their sends in the window
        and count the ones allowed. Returns each journey contact's hold (None: it sends) and the
        message ids this call counted (to give back if the step's claim does not hold)."""
        cap = self.policy.frequency_cap
        assert cap is not None
        at = send_counters.lock_contacts(connection, tenant_id, (s.state.contact_id for s in sends))
        # A rolling window needs no zone: spare each contact the phone parse.
        zones = {
            s.state.id: self.zone(s.state)
            if cap.window is FrequencyCapWindow.CALENDAR_DAY
            else UTC_ZONE
            for s in sends
        }
        since = min(counting_since(cap, zones[s.state.id].zone, at) for s in sends)
        sent = send_counters.counted_sends(
            connection, tenant_id, (s.state.contact_id for s in sends), since
        )
        holds: dict[uuid.UUID, HeldSend | None] = {}
        counted: list[send_counters.CountedSend] = []
        for send in sends:
            state = send.state
            held = frequency_cap_hold(cap, zones[state.id], sent[state.contact_id], at)
            holds[state.id] = held
            if held is None:
                # Two journey contacts of one contact in one batch count each other too.
                sent[state.contact_id].append(at)
                counted.append(
                    send_counters.CountedSend(send.message_id, state.contact_id, state.id, at)
                )
        return holds, send_counters.count_sends(connection, tenant_id, counted)
