"""A Redis TTL cache of journey nodes and tenants. It knows Redis only: plain dicts in and out.

One cache per process, built lazily from the process's cache settings (cache_settings(): REDIS_URL;
unset means in-process).
"""

from __future__ import annotations

import threading

from cache.client import make_redis
from cache.journey_cache import CacheRead, JourneyCache
from cache.send_rate import Reservation, SendRateLimiter
from cache.settings import CacheSettings, ConfigError, cache_settings, use_cache_settings

__all__ = [
    "CacheRead",
    "CacheSettings",
    "ConfigError",
    "JourneyCache",
    "Reservation",
    "SendRateLimiter",
    "build_cache",
    "cache_settings",
    "get_cache",
    "get_send_rate_limiter",
    "make_redis",
    "use_cache",
    "use_cache_settings",
]

_lock = threading.Lock()
_cache: JourneyCache | None = None


def build_cache(settings: CacheSettings | None = None) -> JourneyCache:
    """A new cache for `settings` (default: the process's); callers use get_cache()."""
    settings = cache_settings() if settings is None else settings
    return JourneyCache(make_redis(settings), settings)


def get_cache() -> JourneyCache:
    """The process's cache, built on first use; ConfigError if its settings are bad."""
    global _cache
    cache = _cache
    if cache is None:
        with _lock:
            if _cache is None:
                _cache = build_cache()
            cache = _cache
    return cache


_limiters: dict[int, SendRateLimiter] = {}


def get_send_rate_limiter() -> SendRateLimiter:
    """The process's send-rate limiter, on the process cache's Redis and key prefix."""
    cache = get_cache()
    with _lock:
        limiter = _limiters.get(id(cache))
        if limiter is None or limiter.redis is not cache.redis:
            limiter = SendRateLimiter(cache.redis, cache.settings.key_prefix)
            _limiters.clear()
            _limiters[id(cache)] = limiter
        return limiter


def use_cache(cache: JourneyCache | None) -> None:
    """Install `cache` as the process's cache (tests, demo); None rebuilds it, on next use, from
    cache_settings() (use_cache_settings(None) to read the environment again too)."""
    global _cache
    with _lock:
        _cache = cache
