"""A Redis TTL cache of journey nodes and tenants. It knows Redis only: plain dicts in and out.

One cache per process, built lazily from the process's cache settings (cache_settings(): REDIS_URL;
unset means in-process).
"""

from __future__ import annotations

import threading

from cache.client import make_redis
from cache.journey_cache import CacheRead, JourneyCache
from cache.settings import CacheSettings, ConfigError, cache_settings, use_cache_settings

__all__ = [
    "CacheRead",
    "CacheSettings",
    "ConfigError",
    "JourneyCache",
    "build_cache",
    "cache_settings",
    "get_cache",
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


def use_cache(cache: JourneyCache | None) -> None:
    """Install `cache` as the process's cache (tests, demo); None rebuilds it, on next use, from
    cache_settings() (use_cache_settings(None) to read the environment again too)."""
    global _cache
    with _lock:
        _cache = cache
