"""A Redis TTL cache of journey nodes and tenants that never resurrects an invalidated value.

The protocol callers follow (a lease-token scheme, as in Facebook's "Scaling Memcache"):

1. ``read()`` the cache. On a miss, the read also returns the entry's invalidation token.
2. Only then read the database (in a fresh statement: under READ COMMITTED each statement sees the
   latest commits; a snapshot taken *before* step 1 could hold rows older than the token).
3. ``fill_*()`` with the token from step 1. The fill is refused if the token changed meanwhile.

Writers commit first, then call ``invalidate_*()``, which replaces the token and drops the value.
So a reader that read v1 before a writer committed v2 and invalidated cannot write v1 back.

Redis is an accelerator, never a dependency: every Redis error is logged (throttled) and turned
into "unavailable" (read) or False (fill, invalidate), and after a connection error or timeout
the cache stops calling Redis for ``retry_after`` seconds, then tries again by itself.

Keys carry a Redis Cluster hash tag on the tenant, so one tenant's keys share a slot. The stats
hash is one shared key, which a cluster would put in another slot: scripts are single-instance
(or Sentinel) today, and a cluster move needs per-slot stats keys.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis import ConnectionError as RedisConnectionError
from redis import Redis, RedisError
from redis import TimeoutError as RedisTimeoutError

from cache.scripts import Scripts
from cache.settings import CacheSettings

logger = logging.getLogger(__name__)

STATS_TTL_SECONDS = 7 * 86400
STAT_GROUPS = ("node", "tenant")
REDIS_COUNTERS = ("hits", "misses", "fills", "invalidations", "stale_fill_refusals")
# Counted in this process only: "errors" are failed Redis calls (or undecodable values),
# "skipped" are calls not sent because the circuit was open.
LOCAL_COUNTERS = ("errors", "skipped")


@dataclass(frozen=True)
class CacheRead:
    """What one lookup found; tokens are what the matching fill must present."""

    node: dict[str, Any] | None
    tenant: dict[str, Any] | None
    journey_token: str | None
    tenant_token: str | None
    available: bool


UNAVAILABLE = CacheRead(None, None, None, None, available=False)


def _check_id(kind: str, value: str) -> str:
    # Braces would move the cluster hash tag; an empty id would alias another key.
    if not isinstance(value, str) or not value or "{" in value or "}" in value:
        raise ValueError(f"{kind} must be a non-empty string without braces, got {value!r}")
    return value


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", errors="replace")


def _dump(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _new_token() -> str:
    return secrets.token_hex(8)


class _Throttle:
    """Lets one event through per interval and counts what it held back."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def ready(self) -> int | None:
        """Held-back count since the last event if this one may pass, else None. Under a lock."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self._held += 1
            return None
        self._last, held, self._held = now, self._held, 0
        return held


class _Breaker:
    """Open for `retry_after` seconds after a connection-level failure; closed by any success."""

    def __init__(self, retry_after: float, clock: Callable[[], float]) -> None:
        self._retry_after = retry_after
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None
        self._failing = False
        self._warnings = _Throttle(retry_after, clock)

    @property
    def open(self) -> bool:
        open_until = self._open_until
        return open_until is not None and self._clock() < open_until

    def failure(self, operation: str, error: Exception, *, trip: bool, log: bool = True) -> None:
        with self._lock:
            if trip:
                self._open_until = self._clock() + self._retry_after
            self._failing = True
            held = self._warnings.ready() if log else None
        if held is not None:
            logger.warning(
                "Redis cache %s failed (%s: %s); using the database%s%s",
                operation,
                type(error).__name__,
                error,
                f", not calling Redis for {self._retry_after:g}s" if trip else "",
                f" ({held} more failures since the last warning)" if held else "",
            )

    def success(self) -> None:
        if not self._failing:  # the common case: no lock
            return
        with self._lock:
            recovered, self._failing, self._open_until = self._failing, False, None
        if recovered:
            logger.info("Redis cache is answering again")


class JourneyCache:
    """Journey nodes (one hash per journey) and tenants, each guarded by an invalidation token."""

    def __init__(
        self,
        redis: Redis,
        settings: CacheSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self._scripts = Scripts.register(redis)
        self._breaker = _Breaker(settings.retry_after, clock)
        self._decode_warnings = _Throttle(settings.retry_after, clock)
        self._lock = threading.Lock()
        self._local = {group: dict.fromkeys(LOCAL_COUNTERS, 0) for group in STAT_GROUPS}

    # Keys: {prefix}:{t:<tenant>}:... -- the braces are the cluster hash tag.

    def _tenant_space(self, tenant_id: str) -> str:
        return f"{self.settings.key_prefix}:{{t:{_check_id('tenant_id', tenant_id)}}}"

    def nodes_key(self, tenant_id: str, journey_id: str) -> str:
        return f"{self._tenant_space(tenant_id)}:j:{_check_id('journey_id', journey_id)}:nodes"

    def journey_token_key(self, tenant_id: str, journey_id: str) -> str:
        return f"{self._tenant_space(tenant_id)}:j:{_check_id('journey_id', journey_id)}:token"

    def tenant_key(self, tenant_id: str) -> str:
        return f"{self._tenant_space(tenant_id)}:tenant"

    def tenant_token_key(self, tenant_id: str) -> str:
        return f"{self._tenant_space(tenant_id)}:tenant:token"

    @property
    def stats_key(self) -> str:
        return f"{self.settings.key_prefix}:stats"

    @property
    def circuit_open(self) -> bool:
        """True while Redis is being skipped after a connection error or timeout."""
        return self._breaker.open

    # Lookups and writes.

    def read(self, tenant_id: str, journey_id: str, node_id: str) -> CacheRead:
        """The node and the tenant in one round trip; on a miss, fill with the returned token."""
        keys = [
            self.nodes_key(tenant_id, journey_id),
            self.journey_token_key(tenant_id, journey_id),
            self.tenant_key(tenant_id),
            self.tenant_token_key(tenant_id),
            self.stats_key,
        ]
        args: list[str | int] = [
            _check_id("node_id", node_id),
            _new_token(),
            self.settings.token_ttl,
            STATS_TTL_SECONDS,
        ]
        reply = self._call("read", STAT_GROUPS, lambda: self._scripts.read(keys=keys, args=args))
        if reply is None:
            return UNAVAILABLE
        node, journey_token, tenant, tenant_token = reply
        return CacheRead(
            node=self._decode(node, "node"),
            tenant=self._decode(tenant, "tenant"),
            journey_token=_text(journey_token),
            tenant_token=_text(tenant_token),
            available=True,
        )

    def read_tenant(self, tenant_id: str) -> CacheRead:
        """The tenant alone in one round trip; on a miss, fill with the returned token."""
        keys = [self.tenant_key(tenant_id), self.tenant_token_key(tenant_id), self.stats_key]
        args: list[str | int] = [_new_token(), self.settings.token_ttl, STATS_TTL_SECONDS]
        script = self._scripts.read_tenant
        reply = self._call("read_tenant", ("tenant",), lambda: script(keys=keys, args=args))
        if reply is None:
            return UNAVAILABLE
        tenant, tenant_token = reply
        return CacheRead(
            node=None,
            tenant=self._decode(tenant, "tenant"),
            journey_token=None,
            tenant_token=_text(tenant_token),
            available=True,
        )

    def fill_nodes(
        self,
        tenant_id: str,
        journey_id: str,
        nodes: Mapping[str, Mapping[str, Any]],
        token: str | None,
    ) -> bool:
        """Cache nodes (node id -> JSON-able dict) unless the journey was invalidated since the
        read that returned `token`. A None token (no successful read) never writes: a blind
        write could put back a value invalidated while Redis was unreachable."""
        keys = [
            self.nodes_key(tenant_id, journey_id),
            self.journey_token_key(tenant_id, journey_id),
            self.stats_key,
        ]
        args: list[str | int] = [token or "", self.settings.node_ttl, STATS_TTL_SECONDS]
        for node_id, node in nodes.items():
            args += [_check_id("node_id", node_id), _dump(node)]  # serialize errors raise here
        if token is None or not nodes:
            return False
        script = self._scripts.fill_nodes
        return bool(self._call("fill_nodes", ("node",), lambda: script(keys=keys, args=args)) == 1)

    def fill_tenant(self, tenant_id: str, tenant: Mapping[str, Any], token: str | None) -> bool:
        """Cache the tenant unless it was invalidated since the read that returned `token`."""
        keys = [self.tenant_key(tenant_id), self.tenant_token_key(tenant_id), self.stats_key]
        args: list[str | int] = [token or "", self.settings.tenant_ttl, STATS_TTL_SECONDS]
        args.append(_dump(tenant))
        if token is None:
            return False
        script = self._scripts.fill_tenant
        reply = self._call("fill_tenant", ("tenant",), lambda: script(keys=keys, args=args))
        return bool(reply == 1)

    def invalidate_journey(self, tenant_id: str, journey_id: str) -> bool:
        """Drop every cached node of the journey (call after the commit). False: Redis failed,
        so cached nodes may live until their TTL."""
        keys = [
            self.nodes_key(tenant_id, journey_id),
            self.journey_token_key(tenant_id, journey_id),
            self.stats_key,
        ]
        what = f"journey {journey_id} of tenant {tenant_id}"
        return self._invalidate("invalidate_journey", "node", keys, what, self.settings.node_ttl)

    def invalidate_tenant(self, tenant_id: str) -> bool:
        """Drop the cached tenant (call after the commit). False: Redis failed."""
        keys = [self.tenant_key(tenant_id), self.tenant_token_key(tenant_id), self.stats_key]
        what = f"tenant {tenant_id}"
        return self._invalidate("invalidate_tenant", "tenant", keys, what, self.settings.tenant_ttl)

    def invalidate_all(self) -> bool:
        """Drop every cached node and tenant and every token under this prefix.

        For when invalidations may have been missed (the NOTIFY listener reconnecting). Deleting
        the tokens too is what makes it safe against in-flight readers: a fill must present a
        token that still exists, so a fill prepared before this call is refused, and a read
        after it mints a new token. Costs a SCAN of the keyspace: for rare use only.
        """

        def sweep() -> int:
            removed = 0
            batch: list[bytes] = []
            for key in self.redis.scan_iter(match=f"{self.settings.key_prefix}:{{t:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += self.redis.unlink(*batch)
                    batch = []
            if batch:
                removed += self.redis.unlink(*batch)
            return removed

        removed = self._call("invalidate_all", STAT_GROUPS, sweep, bypass_circuit=True)
        if removed is None:
            logger.warning(
                "Redis cache could not invalidate everything; entries may live until their TTL"
            )
            return False
        logger.info(
            "Redis cache: invalidated everything under %s (%d keys)",
            self.settings.key_prefix,
            removed,
        )
        return True

    def _invalidate(self, operation: str, group: str, keys: list[str], what: str, ttl: int) -> bool:
        args: list[str | int] = [_new_token(), self.settings.token_ttl, STATS_TTL_SECONDS, group]
        script = self._scripts.invalidate
        # Invalidations ignore the open circuit: they are rare, and skipping one would leave other
        # processes (whose Redis may be fine) serving the old value until its TTL.
        reply = self._call(
            operation, (group,), lambda: script(keys=keys, args=args), bypass_circuit=True
        )
        if reply != 1:
            # Not throttled: each lost invalidation is a window of staleness worth a line.
            logger.warning(
                "Redis cache could not invalidate %s; workers may keep using the cached "
                "value for up to %ss",
                what,
                ttl,
            )
        return bool(reply == 1)

    # Statistics.

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per group: hits, misses, fills, invalidations and stale_fill_refusals are
        shared by every process using this prefix (zero if Redis is unreachable); errors and
        skipped are this process's own."""
        raw = self._call("stats", (), lambda: self.redis.hgetall(self.stats_key)) or {}
        result = {group: dict.fromkeys(REDIS_COUNTERS + LOCAL_COUNTERS, 0) for group in STAT_GROUPS}
        for field, value in raw.items():
            group, _, counter = (_text(field) or "").partition(".")
            if group in result and counter in REDIS_COUNTERS:
                result[group][counter] = int(value)
        with self._lock:
            for group in STAT_GROUPS:
                result[group].update(self._local[group])
        return result

    def hit_ratio(self, group: str) -> float | None:
        """hits / (hits + misses) for "node" or "tenant"; None before the first lookup."""
        if group not in STAT_GROUPS:
            raise ValueError(f"group must be one of {', '.join(STAT_GROUPS)}, got {group!r}")
        counters = self.stats()[group]
        lookups = counters["hits"] + counters["misses"]
        return counters["hits"] / lookups if lookups else None

    def reset_stats(self) -> None:
        """Zero the shared counters (for every process on this prefix) and this process's own."""
        self._call("reset_stats", (), lambda: self.redis.delete(self.stats_key))
        with self._lock:
            for counters in self._local.values():
                counters.update(dict.fromkeys(LOCAL_COUNTERS, 0))

    # Plumbing.

    def _count(self, groups: Iterable[str], counter: str) -> None:
        with self._lock:
            for group in groups:
                self._local[group][counter] += 1

    def _call(
        self,
        operation: str,
        groups: tuple[str, ...],
        command: Callable[[], Any],
        *,
        bypass_circuit: bool = False,
    ) -> Any:
        """command()'s result, or None when the circuit is open or Redis failed."""
        if not bypass_circuit and self._breaker.open:
            self._count(groups, "skipped")
            return None
        try:
            result = command()
        except (RedisConnectionError, RedisTimeoutError) as error:
            # Unreachable or slow: stop paying a socket timeout per call for a while.
            self._count(groups, "errors")
            self._breaker.failure(operation, error, trip=True, log=not bypass_circuit)
            return None
        except RedisError as error:
            # The server answered (OOM, WRONGTYPE, READONLY...): fast to repeat, so keep trying.
            self._count(groups, "errors")
            self._breaker.failure(operation, error, trip=False, log=not bypass_circuit)
            return None
        self._breaker.success()
        return result

    def _decode(self, raw: bytes | str | None, group: str) -> dict[str, Any] | None:
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        # Someone else's bytes under our key: treat as a miss; the TTL will clear it.
        self._count((group,), "errors")
        with self._lock:
            held = self._decode_warnings.ready()
        if held is not None:
            logger.warning("Redis cache held an undecodable %s value; treated as a miss", group)
        return None
