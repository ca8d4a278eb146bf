"""A tenant's send rate, held cluster-wide: one Redis key per tenant and one round trip per
delivery batch (cache/reserve_send_slots.lua, a GCRA).

A delivery asks for as many send slots as it has messages; it gets those that fall within the
horizon, evenly spaced, and the time of the next free slot. It sends each message at its slot
and defers the rest. The pace is kept a few percent under the configured rate, so scheduling
jitter (a sleep that wakes a few milliseconds late, a request slower than the one before) never
puts one more message than the rate into a one-second window.

If Redis cannot be reached, the limiter paces this process alone (a local copy of the same
algorithm) and says so in the log: the tenant's rate then holds per process, not per cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis, RedisError

from cache.scripts import Scripts

logger = logging.getLogger(__name__)

# The pace is this fraction of the configured rate: the margin that absorbs scheduling jitter.
PACE_FRACTION = 0.95


@dataclass(frozen=True)
class Reservation:
    """Send slots, as seconds from now, and when the next free slot comes."""

    offsets: tuple[float, ...]
    next_free: float
    shared: bool  # held in Redis for every process (False: this process's fallback)


def interval_ms(rate_per_second: float) -> float:
    return 1000.0 / (rate_per_second * PACE_FRACTION)


def _reserve(
    tat: float, now: float, interval: float, wanted: int, horizon: float
) -> tuple[list[float], float]:
    """The algorithm of reserve_send_slots.lua, for the local fallback (times in ms)."""
    tat = max(tat, now)
    slots: list[float] = []
    while len(slots) < wanted and tat <= now + horizon:
        slots.append(tat - now)
        tat += interval
    return slots, tat


class SendRateLimiter:
    def __init__(
        self, redis: Redis, key_prefix: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self._scripts = Scripts.register(redis)
        self._clock = clock
        self._lock = threading.Lock()
        self._local: dict[str, float] = {}
        self._warned_at = 0.0

    def key(self, tenant_id: str) -> str:
        # The tenant's cluster hash tag, like the cache's keys.
        return f"{self.key_prefix}:{{t:{tenant_id}}}:send_rate"

    def reserve(
        self, tenant_id: str, rate_per_second: float, wanted: int, horizon_seconds: float
    ) -> Reservation:
        if rate_per_second <= 0:
            raise ValueError(f"a send rate must be positive, got {rate_per_second!r}")
        interval = interval_ms(rate_per_second)
        try:
            reply = self._scripts.reserve_send_slots(
                keys=[self.key(tenant_id)],
                args=[repr(interval), wanted, repr(horizon_seconds * 1000)],
            )
        except RedisError as error:
            self._warn(error)
            return self._reserve_locally(tenant_id, interval, wanted, horizon_seconds)
        *slots, next_free = (float(v) / 1000 for v in reply)
        return Reservation(tuple(slots), next_free, shared=True)

    def _reserve_locally(
        self, tenant_id: str, interval: float, wanted: int, horizon_seconds: float
    ) -> Reservation:
        now = self._clock() * 1000
        with self._lock:
            slots, tat = _reserve(
                self._local.get(tenant_id, 0.0), now, interval, wanted, horizon_seconds * 1000
            )
            self._local[tenant_id] = tat
        return Reservation(tuple(s / 1000 for s in slots), (tat - now) / 1000, shared=False)

    def _warn(self, error: Exception) -> None:
        now = self._clock()
        if now - self._warned_at >= 60:
            self._warned_at = now
            logger.warning(
                "send rates held per process, not cluster-wide: Redis failed (%s: %s)",
                type(error).__name__,
                error,
            )
