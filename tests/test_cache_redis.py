"""The journey cache against the real Redis server (fixtures redis_url and cache_prefix).

Every test works under its own key prefix and deletes its keys afterwards, so tests can share one
server with anything else. Nothing here pauses or flushes the server: outages are simulated with
a local TCP relay that the test black-holes or shuts.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from cache import CacheSettings, JourneyCache, make_redis
from cache.journey_cache import STATS_TTL_SECONDS
from tests.cache_helpers import CommandCounter, FakeClock
from tests.threads import threads

T1, T2 = "7f1c0f0e-0000-4000-8000-00000000000a", "7f1c0f0e-0000-4000-8000-00000000000b"
J1 = "1d9a4a8e-0000-4000-8000-000000000001"


def node(name: str, version: int = 1) -> dict[str, Any]:
    return {"id": name, "type": "wait", "config": {"seconds": 3600}, "v": version}


@pytest.fixture
def admin(redis_url: str, cache_prefix: str) -> Iterator[redis.Redis]:
    """A plain client for inspecting the server; deletes this test's keys at the end."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    keys = list(client.scan_iter(f"{cache_prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(redis_url: str, cache_prefix: str) -> CacheSettings:
    return CacheSettings(url=redis_url, key_prefix=cache_prefix)


@pytest.fixture
def jc(settings: CacheSettings, clock: FakeClock, admin: redis.Redis) -> Iterator[JourneyCache]:
    cache = JourneyCache(make_redis(settings), settings, clock=clock)
    yield cache
    cache.redis.close()


def warm_scripts(jc: JourneyCache) -> None:
    """Call every script once: a server's first EVALSHA of a script adds NOSCRIPT + SCRIPT LOAD."""
    seen = jc.read("warm", "warm", "warm")
    jc.fill_nodes("warm", "warm", {"warm": {}}, seen.journey_token)
    jc.fill_tenant("warm", {}, seen.tenant_token)
    jc.invalidate_journey("warm", "warm")


def cache_and_fill(jc: JourneyCache, tenant: str, journey: str, nodes: dict[str, Any]) -> None:
    seen = jc.read(tenant, journey, next(iter(nodes)))
    assert jc.fill_nodes(tenant, journey, nodes, seen.journey_token)


@contextmanager
def monitored(admin: redis.Redis, prefix: str) -> Iterator[list[dict[str, Any]]]:
    """The server-side commands naming this test's prefix, including those run inside Lua
    (client_type "lua"), as MONITOR reports them. The list fills when the block ends."""
    seen: list[dict[str, Any]] = []
    sentinel = f"{prefix}:monitor-end:{uuid.uuid4().hex}"
    with admin.monitor() as monitor:
        yield seen
        admin.get(sentinel)  # MONITOR is ordered: once the sentinel shows, everything before has
        for command in monitor.listen():
            if sentinel in command["command"]:
                break
            if prefix in command["command"]:
                seen.append(command)


def names(commands: list[dict[str, Any]]) -> list[str]:
    return [c["command"].split(" ", 1)[0].upper() for c in commands]


# Core behaviour on the real server.


def test_miss_then_hit(jc: JourneyCache) -> None:
    first = jc.read(T1, J1, "n1")
    assert first.available and first.node is None and first.tenant is None
    assert jc.fill_nodes(T1, J1, {"n1": node("n1"), "n2": node("n2")}, first.journey_token)
    assert jc.fill_tenant(T1, {"id": T1, "status": "ACTIVE"}, first.tenant_token)
    second = jc.read(T1, J1, "n2")
    assert second.node == node("n2") and second.tenant == {"id": T1, "status": "ACTIVE"}


def test_every_key_under_the_prefix_has_a_ttl(
    jc: JourneyCache, admin: redis.Redis, cache_prefix: str, settings: CacheSettings
) -> None:
    warm_scripts(jc)
    cache_and_fill(jc, T1, J1, {f"n{i}": node(f"n{i}") for i in range(20)})
    seen = jc.read(T2, J1, "n1")
    jc.fill_tenant(T2, {"status": "ACTIVE"}, seen.tenant_token)
    jc.invalidate_tenant(T1)
    jc.read(T1, J1, "missing")

    keys = list(admin.scan_iter(f"{cache_prefix}*", count=1000))
    assert len(keys) >= 8
    longest = max(settings.node_ttl, settings.tenant_ttl, settings.token_ttl, STATS_TTL_SECONDS)
    for key in keys:
        assert 0 < admin.pttl(key) <= longest * 1000, key
    assert 0 < admin.pttl(jc.nodes_key(T1, J1)) <= settings.node_ttl * 1000
    assert 0 < admin.pttl(jc.tenant_key(T2)) <= settings.tenant_ttl * 1000


def test_an_expired_journey_misses(jc: JourneyCache, admin: redis.Redis) -> None:
    cache_and_fill(jc, T1, J1, {"n1": node("n1")})
    admin.pexpire(jc.nodes_key(T1, J1), 1)
    time.sleep(0.02)
    assert jc.read(T1, J1, "n1").node is None


def test_tenants_are_isolated(jc: JourneyCache) -> None:
    cache_and_fill(jc, T1, J1, {"n1": node("from-a")})
    seen_b = jc.read(T2, J1, "n1")
    assert seen_b.available and seen_b.node is None
    jc.fill_nodes(T2, J1, {"n1": node("from-b")}, seen_b.journey_token)
    jc.invalidate_journey(T1, J1)
    assert jc.read(T2, J1, "n1").node == node("from-b")
    assert jc.read(T1, J1, "n1").node is None


def test_the_invalidation_race_step_by_step(jc: JourneyCache) -> None:
    reader = jc.read(T1, J1, "n1")  # miss
    from_db = {"n1": node("n1", 1)}  # the reader's database read: v1
    assert jc.invalidate_journey(T1, J1)  # a writer committed v2, then invalidated
    assert not jc.fill_nodes(T1, J1, from_db, reader.journey_token)  # v1 refused
    again = jc.read(T1, J1, "n1")
    assert again.node is None
    assert jc.fill_nodes(T1, J1, {"n1": node("n1", 2)}, again.journey_token)
    assert jc.read(T1, J1, "n1").node == node("n1", 2)
    assert jc.stats()["node"]["stale_fill_refusals"] == 1


def test_a_large_journey_fills_past_luas_unpack_limit(jc: JourneyCache, admin: redis.Redis) -> None:
    nodes = {f"n{i}": node(f"n{i}") for i in range(5000)}  # 10,000 values: one unpack() fails
    cache_and_fill(jc, T1, J1, nodes)
    assert admin.hlen(jc.nodes_key(T1, J1)) == 5000


def test_stats(jc: JourneyCache) -> None:
    seen = jc.read(T1, J1, "n1")
    jc.fill_nodes(T1, J1, {"n1": node("n1")}, seen.journey_token)
    jc.read(T1, J1, "n1")
    jc.invalidate_journey(T1, J1)
    stats = jc.stats()["node"]
    assert (stats["hits"], stats["misses"], stats["fills"], stats["invalidations"]) == (1, 1, 1, 1)
    assert jc.hit_ratio("node") == 0.5
    jc.reset_stats()
    assert jc.hit_ratio("node") is None


# Costs, measured on the server.


def test_a_read_is_one_round_trip(jc: JourneyCache, admin: redis.Redis, cache_prefix: str) -> None:
    warm_scripts(jc)
    cache_and_fill(jc, T1, J1, {"n1": node("n1")})
    counter = CommandCounter(jc.redis)
    with monitored(admin, cache_prefix) as commands:
        hit = jc.read(T1, J1, "n1")
        miss = jc.read(T1, J1, "n2")
    assert hit.node == node("n1") and miss.node is None
    assert counter.take() == ["EVALSHA", "EVALSHA"]
    from_clients = [c for c in commands if c["client_type"] != "lua"]
    assert names(from_clients) == ["EVALSHA", "EVALSHA"]


@pytest.mark.parametrize("count", [5, 500])
def test_invalidation_costs_the_same_commands_whatever_the_size(
    jc: JourneyCache, admin: redis.Redis, cache_prefix: str, count: int
) -> None:
    warm_scripts(jc)
    cache_and_fill(jc, T1, J1, {f"n{i}": node(f"n{i}") for i in range(count)})
    counter = CommandCounter(jc.redis)
    with monitored(admin, cache_prefix) as commands:
        assert jc.invalidate_journey(T1, J1)
    assert counter.take() == ["EVALSHA"]
    assert sorted(names(commands)) == ["EVALSHA", "EXPIRE", "HINCRBY", "SET", "UNLINK"]
    assert admin.exists(jc.nodes_key(T1, J1)) == 0


# Concurrency: threads racing readers against writers on the real server.


def test_concurrent_readers_and_writers_never_serve_an_invalidated_version(
    jc: JourneyCache,
) -> None:
    lock = threading.Lock()
    state = {"db": 0, "invalidated_upto": 0}
    violations: list[tuple[int, int]] = []
    refused = 0
    stop = threading.Event()

    def writer() -> None:
        rng = random.Random(1)
        while not stop.is_set():
            with lock:
                state["db"] += 1  # commit
                version = state["db"]
            time.sleep(rng.uniform(0, 0.002))
            jc.invalidate_journey(T1, J1)  # after the commit
            with lock:
                state["invalidated_upto"] = max(state["invalidated_upto"], version)
            time.sleep(rng.uniform(0, 0.003))

    def reader(seed: int) -> None:
        nonlocal refused
        rng = random.Random(seed)
        while not stop.is_set():
            with lock:
                floor = state["invalidated_upto"]
            seen = jc.read(T1, J1, "n1")
            assert seen.available
            if seen.node is not None:
                if seen.node["v"] < floor:
                    violations.append((seen.node["v"], floor))
                continue
            with lock:
                from_db = state["db"]  # the database read comes after the cache read
            time.sleep(rng.uniform(0, 0.003))
            if not jc.fill_nodes(T1, J1, {"n1": node("n1", from_db)}, seen.journey_token):
                with lock:
                    refused += 1

    with threads(timeout=10) as pool:
        pool.start(writer)
        for seed in range(4):
            pool.start(reader, seed)
        try:
            # A soak, not an interleaving: random pauses race readers and the writer a while.
            time.sleep(1.5)
        finally:
            stop.set()

    stats = jc.stats()["node"]
    assert violations == []
    assert refused > 0 and stats["stale_fill_refusals"] == refused  # the race really happened
    assert stats["hits"] > 0 and stats["fills"] > 0
    assert stats["errors"] == 0


# Outages in the middle of a run.


class Relay:
    """A TCP relay to Redis that a test can black-hole (the server stops answering: timeouts)
    or shut (connections reset and refused)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._relaying = threading.Event()
        self._relaying.set()
        self._sockets: list[socket.socket] = []
        self.port = 0
        self.reopen()

    def reopen(self) -> None:
        """Listen (again, on the same port once it has one)."""
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def blackhole(self) -> None:
        self._relaying.clear()

    def resume(self) -> None:
        self._relaying.set()

    def shut(self) -> None:
        # shutdown() first: on Linux, close() alone does not wake a thread blocked in accept().
        for sock in [self._listener, *self._sockets]:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        while True:
            try:
                ready, _, _ = select.select(list(peers), [], [], 0.02)
            except (OSError, ValueError):
                return
            if not self._relaying.is_set():
                continue  # bytes wait in the kernel: the client sees a server that stopped
            for sock in ready:
                try:
                    data = sock.recv(65536)
                    if data:
                        peers[sock].sendall(data)
                        continue
                except OSError:
                    pass
                for end in peers:
                    with suppress(OSError):
                        end.close()
                return


@pytest.fixture
def relay(redis_url: str) -> Iterator[Relay]:
    parts = urlsplit(redis_url)
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 6379))
    yield relay
    relay.shut()


def relayed_cache(
    relay: Relay, redis_url: str, cache_prefix: str, clock: FakeClock
) -> JourneyCache:
    database = urlsplit(redis_url).path.lstrip("/") or "0"
    settings = CacheSettings(
        url=f"redis://127.0.0.1:{relay.port}/{database}",
        key_prefix=cache_prefix,
        socket_timeout=0.2,
        retry_after=5.0,
    )
    return JourneyCache(make_redis(settings), settings, clock=clock)


def test_a_redis_that_stops_answering_costs_one_timeout_then_heals(
    relay: Relay,
    redis_url: str,
    cache_prefix: str,
    clock: FakeClock,
    admin: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jc = relayed_cache(relay, redis_url, cache_prefix, clock)
    cache_and_fill(jc, T1, J1, {"n1": node("n1")})
    assert jc.read(T1, J1, "n1").node == node("n1")

    relay.blackhole()
    started = time.monotonic()
    down = jc.read(T1, J1, "n1")  # no exception: the caller goes to the database
    assert not down.available and down.node is None
    assert time.monotonic() - started < 1.0  # one socket timeout (0.2 s), no retry storm
    assert jc.circuit_open
    assert "TimeoutError" in caplog.text

    started = time.monotonic()
    for _ in range(50):
        assert not jc.read(T1, J1, "n1").available
    assert time.monotonic() - started < 0.1  # the open circuit skips Redis entirely
    assert jc.stats()["node"]["errors"] == 1

    relay.resume()
    clock.advance(5.0)
    back = jc.read(T1, J1, "n1")
    assert back.available and back.node == node("n1")  # the entry survived in Redis
    assert not jc.circuit_open
    jc.redis.close()


def test_a_redis_that_goes_away_and_returns(
    relay: Relay,
    redis_url: str,
    cache_prefix: str,
    clock: FakeClock,
    admin: redis.Redis,
) -> None:
    jc = relayed_cache(relay, redis_url, cache_prefix, clock)
    cache_and_fill(jc, T1, J1, {"n1": node("n1")})

    relay.shut()  # established connections reset, new ones refused
    assert not jc.read(T1, J1, "n1").available
    assert not jc.fill_nodes(T1, J1, {"n1": node("n1")}, "token")  # skipped: circuit open
    assert not jc.invalidate_journey(T1, J1)  # attempted anyway, fails fast
    stats = jc.stats()["node"]
    assert (stats["errors"], stats["skipped"]) == (2, 1)

    relay.reopen()  # Redis is back: the cache uses it again by itself, once retry_after passed
    assert not jc.read(T1, J1, "n1").available
    clock.advance(5.0)
    assert jc.read(T1, J1, "n1").node == node("n1")
    assert not jc.circuit_open
    jc.redis.close()


def test_a_connection_the_server_dropped_is_replaced_silently(
    jc: JourneyCache, admin: redis.Redis
) -> None:
    # What a Redis restart or an idle timeout does to pooled connections.
    cache_and_fill(jc, T1, J1, {"n1": node("n1")})
    admin.client_kill_filter(_id=str(jc.redis.client_id()))
    time.sleep(0.02)
    assert jc.read(T1, J1, "n1").node == node("n1")
    assert jc.stats()["node"]["errors"] == 0
    assert not jc.circuit_open


def test_invalidate_all_drops_values_and_refuses_fills_prepared_before_it(
    redis_url: str, cache_prefix: str
) -> None:
    from cache import CacheSettings, build_cache

    cache = build_cache(CacheSettings(url=redis_url, key_prefix=cache_prefix))
    tenant, journey, node = (str(uuid.uuid4()) for _ in range(3))
    try:
        first = cache.read(tenant, journey, node)
        assert cache.fill_nodes(tenant, journey, {node: {"v": 1}}, first.journey_token)
        assert cache.fill_tenant(tenant, {"status": "ACTIVE"}, first.tenant_token)
        in_flight = cache.read(tenant, str(uuid.uuid4()), node)
        assert cache.read(tenant, journey, node).node == {"v": 1}
        assert cache.invalidate_all() is True
        after = cache.read(tenant, journey, node)
        assert after.node is None and after.tenant is None
        # A fill prepared from a read before invalidate_all must not land.
        assert cache.fill_nodes(tenant, journey, {node: {"v": 0}}, first.journey_token) is False
        assert cache.fill_tenant(tenant, {"status": "OLD"}, in_flight.tenant_token) is False
        assert cache.fill_nodes(tenant, journey, {node: {"v": 2}}, after.journey_token) is True
        assert cache.read(tenant, journey, node).node == {"v": 2}
    finally:
        keys = list(cache.redis.scan_iter(match=f"{cache_prefix}*"))
        if keys:
            cache.redis.delete(*keys)
