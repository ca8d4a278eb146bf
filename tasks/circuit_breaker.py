"""A circuit breaker per SMS provider per process: stop sending to a provider that keeps failing,
try it again after a cool-down.

Closed: calls go through; `failure_threshold` failures in a row open it. Open: no calls until
`cooldown_seconds` have passed. Then half-open: calls go through again, and the first result
decides (a success closes it, a failure opens it for another cool-down). Per process on
purpose: each worker child learns from its own calls, nothing is shared or coordinated, and a
child that never saw the failures simply tries the provider (at worst `failure_threshold`
calls per child before it too skips it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tasks import metrics

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failure_threshold: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self.clock() - self._opened_at < self.cooldown_seconds:
            return OPEN
        return HALF_OPEN

    def allows(self) -> bool:
        """Whether a call may go to the provider now."""
        with self._lock:
            return self._state() != OPEN

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None

    def record_failure(self) -> None:
        with self._lock:
            state = self._state()
            self._failures += 1
            if state == HALF_OPEN or (state == CLOSED and self._failures >= self.failure_threshold):
                self._opened_at = self.clock()
                metrics.SMS_PROVIDER_CIRCUIT_OPENS.labels(self.name).inc()


_lock = threading.Lock()
_breakers: dict[tuple[str, int, float], CircuitBreaker] = {}


def breaker_for(name: str, failure_threshold: int, cooldown_seconds: float) -> CircuitBreaker:
    """This process's breaker for the provider (one per name and settings)."""
    key = (name, failure_threshold, cooldown_seconds)
    with _lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = CircuitBreaker(name, failure_threshold, cooldown_seconds)
        return breaker


def reset_after_fork() -> None:
    """In a forked child: start with every circuit closed (the parent sends nothing anyway)."""
    global _lock
    _lock = threading.Lock()
    _breakers.clear()
