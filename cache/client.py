"""The Redis client the cache talks to: a real server, or an in-process one when none is set."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache.settings import CacheSettings

if TYPE_CHECKING:
    import fakeredis

CLIENT_NAME = "journey-worker-cache"
# PING a pooled connection idle longer than this before reusing it, so a connection the server
# or a firewall dropped while idle is replaced instead of failing (and opening the circuit).
HEALTH_CHECK_INTERVAL_SECONDS = 30

_embedded_lock = threading.Lock()
_embedded_server: fakeredis.FakeServer | None = None


def _embedded() -> fakeredis.FakeServer:
    """One in-process server per process, shared by every embedded client and by no one else."""
    global _embedded_server
    import fakeredis  # only the embedded mode pays for importing it

    with _embedded_lock:
        if _embedded_server is None:
            _embedded_server = fakeredis.FakeServer()
        return _embedded_server


def make_redis(settings: CacheSettings) -> redis.Redis:
    """A client for settings.url, or an in-process fakeredis (with Lua) when url is None.

    The embedded cache lives in each process's memory: invalidations made in one process never
    reach another, so only TTLs bound staleness there. Use a real Redis with several processes.
    """
    if settings.redis_url is None:
        import fakeredis

        return fakeredis.FakeRedis(server=_embedded())
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_timeout,
        health_check_interval=HEALTH_CHECK_INTERVAL_SECONDS,
        # One immediate retry on a connection error covers a pooled socket the server closed
        # (restart, client timeout). Timeouts are not retried: a slow server would cost two
        # socket timeouts per call, and the circuit breaker handles a server that stays slow.
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        client_name=CLIENT_NAME,
        decode_responses=False,
    )
