"""The journey cache against an in-process Redis (fakeredis with Lua): fast, no services needed."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

import cache as cache_module
from cache import CacheRead, CacheSettings, ConfigError, JourneyCache, make_redis
from cache.journey_cache import STATS_TTL_SECONDS
from tests.cache_helpers import CommandCounter, FakeClock

T1, T2 = "tenant-a", "tenant-b"
J1, J2 = "journey-1", "journey-2"


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> redis.Redis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> CacheSettings:
    return CacheSettings(url=None, key_prefix="unit")


@pytest.fixture
def jc(client: redis.Redis, settings: CacheSettings, clock: FakeClock) -> JourneyCache:
    return JourneyCache(client, settings, clock=clock)


def node(name: str, version: int = 1) -> dict[str, Any]:
    return {"id": name, "type": "send_sms", "config": {"body": f"Hi {name}"}, "v": version}


def warm_scripts(jc: JourneyCache) -> None:
    """Call every script once: a server's first EVALSHA of a script adds NOSCRIPT + SCRIPT LOAD."""
    seen = jc.read("warm", "warm", "warm")
    jc.fill_nodes("warm", "warm", {"warm": {}}, seen.journey_token)
    jc.fill_tenant("warm", {}, seen.tenant_token)
    jc.invalidate_journey("warm", "warm")


def cache_and_fill(jc: JourneyCache, tenant: str, journey: str, nodes: dict[str, Any]) -> None:
    first = next(iter(nodes))
    seen = jc.read(tenant, journey, first)
    assert jc.fill_nodes(tenant, journey, nodes, seen.journey_token)


# Hits, misses, fills.


def test_miss_then_hit(jc: JourneyCache) -> None:
    first = jc.read(T1, J1, "n1")
    assert first.available and first.node is None and first.tenant is None
    assert first.journey_token and first.tenant_token  # a miss hands out the token to fill with

    assert jc.fill_nodes(T1, J1, {"n1": node("n1"), "n2": node("n2")}, first.journey_token)
    assert jc.fill_tenant(T1, {"id": T1, "status": "ACTIVE"}, first.tenant_token)

    second = jc.read(T1, J1, "n2")
    assert second == CacheRead(
        node=node("n2"),
        tenant={"id": T1, "status": "ACTIVE"},
        journey_token=first.journey_token,
        tenant_token=first.tenant_token,
        available=True,
    )


def test_values_round_trip_exactly_and_compactly(jc: JourneyCache, client: redis.Redis) -> None:
    value = {"config": {"body": "Grüße 👋 {{first_name}}", "w": [50, 50.5, None, True]}, "n": 0}
    seen = jc.read(T1, J1, "n1")
    assert jc.fill_nodes(T1, J1, {"n1": value}, seen.journey_token)
    assert jc.read(T1, J1, "n1").node == value
    stored = client.hget(jc.nodes_key(T1, J1), "n1")
    assert stored == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_node_missing_from_a_cached_journey_is_a_miss_and_can_be_added(
    jc: JourneyCache,
) -> None:
    cache_and_fill(jc, T1, J1, {"n1": node("n1")})
    seen = jc.read(T1, J1, "n2")
    assert seen.available and seen.node is None
    assert jc.fill_nodes(T1, J1, {"n2": node("n2")}, seen.journey_token)
    assert jc.read(T1, J1, "n1").node == node("n1")
    assert jc.read(T1, J1, "n2").node == node("n2")


def test_two_readers_that_missed_together_may_both_fill(jc: JourneyCache) -> None:
    a, b = jc.read(T1, J1, "n1"), jc.read(T1, J1, "n1")
    assert a.journey_token == b.journey_token
    assert jc.fill_nodes(T1, J1, {"n1": node("n1")}, a.journey_token)
    assert jc.fill_nodes(T1, J1, {"n1": node("n1")}, b.journey_token)
    assert jc.stats()["node"]["stale_fill_refusals"] == 0


def test_a_fill_without_a_token_never_writes(jc: JourneyCache, client: redis.Redis) -> None:
    counter = CommandCounter(client)
    assert not jc.fill_nodes(T1, J1, {"n1": node("n1")}, None)
    assert not jc.fill_tenant(T1, {"status": "ACTIVE"}, None)
    assert counter.take() == []
    assert client.exists(jc.nodes_key(T1, J1), jc.tenant_key(T1)) == 0


def test_an_empty_fill_writes_nothing(jc: JourneyCache) -> None:
    seen = jc.read(T1, J1, "n1")
    assert not jc.fill_nodes(T1, J1, {}, seen.journey_token)


def test_bad_ids_and_unserializable_values_raise(jc: JourneyCache) -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        jc.read("", J1, "n1")
    with pytest.raises(ValueError, match="journey_id"):
        jc.read(T1, "j{x}", "n1")
    seen = jc.read(T1, J1, "n1")
    with pytest.raises(TypeError):
        jc.fill_nodes(T1, J1, {"n1": {"when": object()}}, seen.journey_token)


# TTLs.


def test_every_key_carries_a_ttl_within_its_bound(
    jc: JourneyCache, client: redis.Redis, settings: CacheSettings
) -> None:
    cache_and_fill(jc, T1, J1, {"n1": node("n1")})
    seen = jc.read(T1, J2, "n1")
    assert jc.fill_tenant(T1, {"status": "ACTIVE"}, seen.tenant_token)
    jc.invalidate_journey(T1, J2)
    jc.read(T2, J1, "n1")  # tokens only

    bounds = {
        jc.nodes_key(T1, J1): settings.node_ttl,
        jc.journey_token_key(T1, J1): settings.token_ttl,
        jc.journey_token_key(T1, J2): settings.token_ttl,
        jc.tenant_key(T1): settings.tenant_ttl,
        jc.tenant_token_key(T1): settings.token_ttl,
        jc.journey_token_key(T2, J1): settings.token_ttl,
        jc.tenant_token_key(T2): settings.token_ttl,
        jc.stats_key: STATS_TTL_SECONDS,
    }
    keys = {key.decode() for key in client.scan_iter("unit:*")}
    assert keys == set(bounds)
    for key, bound in bounds.items():
        assert 0 < client.pttl(key) <= bound * 1000, key


def test_ttl_comes_from_the_settings(client: redis.Redis, clock: FakeClock) -> None:
    jc = JourneyCache(
        client, CacheSettings(url=None, key_prefix="ttl", node_ttl=7, tenant_ttl=9), clock=clock
    )
    seen = jc.read(T1, J1, "n1")
    jc.fill_nodes(T1, J1, {"n1": node("n1")}, seen.journey_token)
    jc.fill_tenant(T1, {"status": "ACTIVE"}, seen.tenant_token)
    assert 6_000 < client.pttl(jc.nodes_key(T1, J1)) <= 7_000
    assert 8_000 < client.pttl(jc.tenant_key(T1)) <= 9_000


def test_later_fills_never_extend_a_journeys_ttl(jc: JourneyCache, client: redis.Redis) -> None:
    cache_and_fill(jc, T1, J1, {"n1": node("n1")})
    client.pexpire(jc.nodes_key(T1, J1), 40_000)  # as if the first fill was long ago
    seen = jc.read(T1, J1, "n2")
    assert jc.fill_nodes(T1, J1, {"n2": node("n2")}, seen.journey_token)
    assert 0 < client.pttl(jc.nodes_key(T1, J1)) <= 40_000


def test_an_expired_entry_misses(jc: JourneyCache, client: redis.Redis) -> None:
    cache_and_fill(jc, T1, J1, {"n1": node("n1")})
    seen = jc.read(T1, J1, "n1")
    jc.fill_tenant(T1, {"status": "ACTIVE"}, seen.tenant_token)
    assert jc.read(T1, J1, "n1").tenant is not None

    client.pexpire(jc.nodes_key(T1, J1), 1)
    client.pexpire(jc.tenant_key(T1), 1)
    time.sleep(0.02)
    after = jc.read(T1, J1, "n1")
    assert after.available and after.node is None and after.tenant is None
    assert jc.fill_nodes(T1, J1, {"n1": node("n1", 2)}, after.journey_token)  # refill works
    assert jc.read(T1, J1, "n1").node == node("n1", 2)


# Invalidation.


@pytest.mark.parametrize("count", [5, 500])
def test_invalidating_a_journey_is_one_command_whatever_its_size(
    jc: JourneyCache, client: redis.Redis, count: int
) -> None:
    nodes = {f"n{i}": node(f"n{i}") for i in range(count)}
    cache_and_fill(jc, T1, J1, nodes)
    assert client.hlen(jc.nodes_key(T1, J1)) == count

    warm_scripts(jc)
    counter = CommandCounter(client)
    assert jc.invalidate_journey(T1, J1)
    assert counter.take() == ["EVALSHA"]  # the script itself is constant: SET, UNLINK, 2 stats

    assert client.exists(jc.nodes_key(T1, J1)) == 0
    for node_id in ("n0", f"n{count - 1}"):
        assert jc.read(T1, J1, node_id).node is None


def test_invalidating_a_tenant_drops_it(jc: JourneyCache) -> None:
    seen = jc.read(T1, J1, "n1")
    jc.fill_tenant(T1, {"status": "ACTIVE"}, seen.tenant_token)
    assert jc.invalidate_tenant(T1)
    assert jc.read(T1, J1, "n1").tenant is None


def test_a_large_journey_fills_past_luas_unpack_limit(
    jc: JourneyCache, client: redis.Redis
) -> None:
    nodes = {f"n{i}": node(f"n{i}") for i in range(5000)}  # 10,000 values > ~8,000 unpack limit
    cache_and_fill(jc, T1, J1, nodes)
    assert client.hlen(jc.nodes_key(T1, J1)) == 5000
    assert jc.read(T1, J1, "n4999").node == node("n4999")


# Tenant isolation.


def test_tenants_never_see_each_others_entries(jc: JourneyCache) -> None:
    seen_a = jc.read(T1, J1, "n1")
    jc.fill_nodes(T1, J1, {"n1": node("a")}, seen_a.journey_token)
    jc.fill_tenant(T1, {"id": T1}, seen_a.tenant_token)

    seen_b = jc.read(T2, J1, "n1")
    assert seen_b.available and seen_b.node is None and seen_b.tenant is None

    jc.fill_nodes(T2, J1, {"n1": node("b")}, seen_b.journey_token)
    jc.fill_tenant(T2, {"id": T2}, seen_b.tenant_token)
    jc.invalidate_journey(T1, J1)
    jc.invalidate_tenant(T1)
    b = jc.read(T2, J1, "n1")
    assert (b.node, b.tenant) == (node("b"), {"id": T2})
    a = jc.read(T1, J1, "n1")
    assert (a.node, a.tenant) == (None, None)


def test_keys_carry_the_tenant_as_a_cluster_hash_tag(jc: JourneyCache) -> None:
    assert jc.nodes_key(T1, J1) == "unit:{t:tenant-a}:j:journey-1:nodes"
    assert jc.journey_token_key(T1, J1) == "unit:{t:tenant-a}:j:journey-1:token"
    assert jc.tenant_key(T1) == "unit:{t:tenant-a}:tenant"
    assert jc.tenant_token_key(T1) == "unit:{t:tenant-a}:tenant:token"
    assert jc.stats_key == "unit:stats"


# The invalidation race (FIELD_NOTES "Cache invalidation race"; HARD_CASES 7 and 8).


def test_the_invalidation_race_cannot_write_back_a_stale_node(jc: JourneyCache) -> None:
    db = {"n1": node("n1", 1)}

    reader = jc.read(T1, J1, "n1")  # 1. the reader misses...
    assert reader.node is None
    read_from_db = dict(db)  # 2. ...and reads v1 from the database
    db["n1"] = node("n1", 2)  # 3. a writer commits v2...
    assert jc.invalidate_journey(T1, J1)  # 4. ...and invalidates after the commit
    assert not jc.fill_nodes(T1, J1, read_from_db, reader.journey_token)  # 5. v1 is refused

    again = jc.read(T1, J1, "n1")  # 6. the next reader misses instead of reading v1
    assert again.available and again.node is None
    assert jc.fill_nodes(T1, J1, dict(db), again.journey_token)  # 7. and caches v2
    assert jc.read(T1, J1, "n1").node == node("n1", 2)
    assert jc.stats()["node"]["stale_fill_refusals"] == 1


def test_a_suspension_racing_a_fill_is_not_undone(jc: JourneyCache) -> None:
    reader = jc.read(T1, J1, "n1")
    stale = {"id": T1, "status": "ACTIVE"}
    assert jc.invalidate_tenant(T1)  # the tenant was suspended and committed meanwhile
    assert not jc.fill_tenant(T1, stale, reader.tenant_token)
    again = jc.read(T1, J1, "n1")
    assert again.tenant is None
    assert jc.fill_tenant(T1, {"id": T1, "status": "SUSPENDED"}, again.tenant_token)
    assert jc.read(T1, J1, "n1").tenant == {"id": T1, "status": "SUSPENDED"}
    assert jc.stats()["tenant"]["stale_fill_refusals"] == 1


def test_a_token_lost_to_eviction_or_flush_refuses_the_fill(
    jc: JourneyCache, client: redis.Redis
) -> None:
    # A plain "nil == nil" check would admit this fill: the writer's token is gone, so the cache
    # could no longer tell that v1 was invalidated. The reader's own token makes it refuse.
    reader = jc.read(T1, J1, "n1")
    jc.invalidate_journey(T1, J1)
    client.flushall()  # or eviction of the token, or a Redis restart
    assert not jc.fill_nodes(T1, J1, {"n1": node("n1", 1)}, reader.journey_token)
    again = jc.read(T1, J1, "n1")
    assert again.node is None
    assert jc.fill_nodes(T1, J1, {"n1": node("n1", 2)}, again.journey_token)


def run_interleavings(jc: JourneyCache, seed: int, *, naive_fill: bool) -> tuple[int, int]:
    """Random schedules of readers and writers, one step at a time. A cache hit must never be
    older than the last version whose invalidation finished before the read started.
    Returns (violations, refused fills)."""
    rng = random.Random(seed)
    state = {"db": 0, "invalidated_upto": 0, "violations": 0, "refused": 0}

    def writer() -> Iterator[None]:
        state["db"] += 1  # commit
        version = state["db"]
        yield
        jc.invalidate_journey(T1, J1)  # after the commit
        state["invalidated_upto"] = max(state["invalidated_upto"], version)

    def reader() -> Iterator[None]:
        floor = state["invalidated_upto"]
        seen = jc.read(T1, J1, "n1")
        if seen.node is not None:
            state["violations"] += seen.node["v"] < floor
            return
        yield
        from_db = state["db"]
        yield
        if naive_fill:  # what a fill without the token check would do
            jc.redis.hset(jc.nodes_key(T1, J1), "n1", json.dumps(node("n1", from_db)))
        elif not jc.fill_nodes(T1, J1, {"n1": node("n1", from_db)}, seen.journey_token):
            state["refused"] += 1

    actors: list[Iterator[None]] = []
    for _ in range(600):
        if rng.random() < 0.2 or not actors:
            actors.append(writer() if rng.random() < 0.3 else reader())
        actor = rng.choice(actors)
        if next(actor, StopIteration) is StopIteration:
            actors.remove(actor)
    return state["violations"], state["refused"]


@pytest.mark.parametrize("seed", range(5))
def test_random_interleavings_never_serve_an_invalidated_version(
    jc: JourneyCache, seed: int
) -> None:
    violations, refused = run_interleavings(jc, seed, naive_fill=False)
    assert violations == 0
    assert refused > 0  # the schedules really did race


def test_random_interleavings_catch_a_naive_fill(jc: JourneyCache) -> None:
    # The checker has teeth: the same schedules with an unguarded fill do serve stale versions.
    assert any(run_interleavings(jc, seed, naive_fill=True)[0] for seed in range(5))


# One round trip.


def test_read_and_fill_are_one_command_each(jc: JourneyCache, client: redis.Redis) -> None:
    warm_scripts(jc)
    counter = CommandCounter(client)
    seen = jc.read(T1, J1, "n1")
    jc.fill_nodes(T1, J1, {"n1": node("n1")}, seen.journey_token)
    jc.fill_tenant(T1, {"status": "ACTIVE"}, seen.tenant_token)
    jc.read(T1, J1, "n1")
    assert counter.take() == ["EVALSHA"] * 4


def test_a_flushed_script_cache_is_reloaded(jc: JourneyCache, client: redis.Redis) -> None:
    jc.read(T1, J1, "n1")
    client.script_flush()  # as after a Redis restart
    counter = CommandCounter(client)
    assert jc.read(T1, J1, "n1").available
    assert counter.take() == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]
    assert jc.stats()["node"]["errors"] == 0


# Statistics.


def test_stats_count_each_outcome(jc: JourneyCache) -> None:
    assert jc.hit_ratio("node") is None
    seen = jc.read(T1, J1, "n1")  # node miss, tenant miss
    jc.fill_nodes(T1, J1, {"n1": node("n1")}, seen.journey_token)
    jc.fill_tenant(T1, {"status": "ACTIVE"}, seen.tenant_token)
    jc.read(T1, J1, "n1")  # hit, hit
    jc.read(T1, J1, "n1")  # hit, hit
    stale = jc.read(T1, J1, "n2")  # miss, hit
    jc.invalidate_journey(T1, J1)
    jc.fill_nodes(T1, J1, {"n2": node("n2")}, stale.journey_token)  # refused
    jc.invalidate_tenant(T1)

    assert jc.stats() == {
        "node": {
            "hits": 2,
            "misses": 2,
            "fills": 1,
            "invalidations": 1,
            "stale_fill_refusals": 1,
            "errors": 0,
            "skipped": 0,
        },
        "tenant": {
            "hits": 3,
            "misses": 1,
            "fills": 1,
            "invalidations": 1,
            "stale_fill_refusals": 0,
            "errors": 0,
            "skipped": 0,
        },
    }
    assert jc.hit_ratio("node") == 0.5
    assert jc.hit_ratio("tenant") == 0.75
    with pytest.raises(ValueError):
        jc.hit_ratio("journey")

    jc.reset_stats()
    assert all(value == 0 for group in jc.stats().values() for value in group.values())
    assert jc.hit_ratio("tenant") is None


def test_stats_are_shared_by_caches_on_one_prefix(
    client: redis.Redis, settings: CacheSettings
) -> None:
    one, two = JourneyCache(client, settings), JourneyCache(client, settings)
    one.read(T1, J1, "n1")
    two.read(T1, J1, "n1")
    assert one.stats()["node"]["misses"] == two.stats()["node"]["misses"] == 2


# Outages: Redis is an accelerator, never a dependency.


def closed_port_cache(clock: FakeClock, retry_after: float = 5.0) -> JourneyCache:
    settings = CacheSettings(url="redis://127.0.0.1:1/0", retry_after=retry_after)
    return JourneyCache(make_redis(settings), settings, clock=clock)


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_dead_redis_costs_one_fast_failure_then_nothing(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    jc = closed_port_cache(clock)
    counter = CommandCounter(jc.redis)
    caplog.set_level(logging.WARNING, logger="cache")

    started = time.monotonic()
    assert jc.read(T1, J1, "n1") == CacheRead(None, None, None, None, available=False)
    assert time.monotonic() - started < 1.0
    assert jc.circuit_open
    assert len(warnings_in(caplog)) == 1
    assert "Redis cache read failed (ConnectionError" in warnings_in(caplog)[0]

    counter.take()
    for _ in range(100):  # the circuit is open: Redis is not even tried
        assert not jc.read(T1, J1, "n1").available
        assert not jc.fill_nodes(T1, J1, {"n1": node("n1")}, "token")
    assert counter.take() == []
    assert len(warnings_in(caplog)) == 1
    stats = jc.stats()
    assert (stats["node"]["errors"], stats["node"]["skipped"]) == (1, 200)
    assert (stats["tenant"]["errors"], stats["tenant"]["skipped"]) == (1, 100)

    clock.advance(5.0)  # retry_after later Redis is tried again, and the failure logged again
    assert not jc.read(T1, J1, "n1").available
    assert counter.take() == ["EVALSHA"]
    assert jc.stats()["node"]["errors"] == 2
    assert len(warnings_in(caplog)) == 2


def test_invalidation_is_attempted_even_with_the_circuit_open(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    jc = closed_port_cache(clock)
    caplog.set_level(logging.WARNING, logger="cache")
    jc.read(T1, J1, "n1")
    assert jc.circuit_open
    counter = CommandCounter(jc.redis)
    assert not jc.invalidate_journey(T1, J1)
    assert not jc.invalidate_tenant(T1)
    assert counter.take() == ["EVALSHA", "EVALSHA"]
    assert (jc.stats()["node"]["errors"], jc.stats()["tenant"]["errors"]) == (2, 2)
    # Each lost invalidation is logged, naming what may stay stale and for how long.
    assert warnings_in(caplog)[1:] == [
        f"Redis cache could not invalidate journey {J1} of tenant {T1}; workers may keep "
        "using the cached value for up to 300s",
        f"Redis cache could not invalidate tenant {T1}; workers may keep using the cached "
        "value for up to 600s",
    ]


def test_warnings_are_throttled_and_say_how_many_were_held_back(
    jc: JourneyCache, client: redis.Redis, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cache")
    client.hset(jc.tenant_key(T1), "x", "y")  # every read now fails with WRONGTYPE
    for _ in range(4):
        assert not jc.read(T1, J1, "n1").available
        clock.advance(1)
    assert len(warnings_in(caplog)) == 1
    clock.advance(1)  # retry_after (5 s) since the first warning
    jc.read(T1, J1, "n1")
    assert len(warnings_in(caplog)) == 2
    assert "(3 more failures since the last warning)" in warnings_in(caplog)[1]
    assert jc.stats()["node"]["errors"] == 5


def test_retry_after_zero_disables_the_circuit_and_the_throttle(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    jc = closed_port_cache(clock, retry_after=0)
    caplog.set_level(logging.WARNING, logger="cache")
    for _ in range(3):
        assert not jc.read(T1, J1, "n1").available
    assert len(warnings_in(caplog)) == 3
    assert (jc.stats()["node"]["errors"], jc.stats()["node"]["skipped"]) == (3, 0)


def test_the_cache_heals_itself_when_redis_returns(
    jc: JourneyCache,
    server: fakeredis.FakeServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cache")
    cache_and_fill(jc, T1, J1, {"n1": node("n1")})

    server.connected = False
    assert not jc.read(T1, J1, "n1").available
    assert not jc.invalidate_journey(T1, J1)
    server.connected = True

    clock.advance(4.9)  # still inside retry_after: skipped although Redis is back
    assert not jc.read(T1, J1, "n1").available
    assert jc.stats()["node"]["skipped"] == 1

    clock.advance(0.1)
    healed = jc.read(T1, J1, "n1")
    assert healed.available and healed.node == node("n1")
    assert not jc.circuit_open
    assert any("answering again" in r.getMessage() for r in caplog.records)
    assert jc.stats()["node"]["errors"] == 2


def test_an_error_reply_is_counted_but_does_not_open_the_circuit(
    jc: JourneyCache, client: redis.Redis
) -> None:
    client.hset(jc.tenant_key(T1), "x", "y")  # WRONGTYPE for the tenant GET
    assert not jc.read(T1, J1, "n1").available
    assert not jc.circuit_open  # the server answered fast: no reason to stop asking
    assert jc.stats()["node"]["errors"] == 1
    client.delete(jc.tenant_key(T1))
    assert jc.read(T1, J1, "n1").available


def test_an_undecodable_value_is_a_miss(jc: JourneyCache, client: redis.Redis) -> None:
    client.hset(jc.nodes_key(T1, J1), "n1", b"\xff not json")
    client.set(jc.tenant_key(T1), b"[1, 2]")  # JSON, but not an object
    seen = jc.read(T1, J1, "n1")
    assert seen.available and seen.node is None and seen.tenant is None
    assert jc.stats()["node"]["errors"] == 1


# Settings.


def test_settings_defaults() -> None:
    assert CacheSettings.from_env({}) == CacheSettings(
        url=None,
        node_ttl=300,
        tenant_ttl=600,
        socket_timeout=0.25,
        key_prefix="jw",
        retry_after=5.0,
        token_ttl=86400,
    )
    assert CacheSettings.from_env({"REDIS_URL": "  "}).embedded


def test_settings_from_env() -> None:
    settings = CacheSettings.from_env(
        {
            "REDIS_URL": "rediss://user:secret@cache.internal:6380/2",
            "CACHE_NODE_TTL_SECONDS": "60",
            "CACHE_TENANT_TTL_SECONDS": "120",
            "CACHE_SOCKET_TIMEOUT_SECONDS": "0.5",
            "CACHE_KEY_PREFIX": "jw-staging",
            "CACHE_RETRY_AFTER_SECONDS": "0",
        }
    )
    assert settings == CacheSettings(
        url="rediss://user:secret@cache.internal:6380/2",
        node_ttl=60,
        tenant_ttl=120,
        socket_timeout=0.5,
        key_prefix="jw-staging",
        retry_after=0.0,
    )


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://h", "unix:///run/r.sock"])
def test_accepted_urls(url: str) -> None:
    assert CacheSettings.from_env({"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("REDIS_URL", "http://h:6379", "unsupported scheme 'http' (redis, rediss or unix)"),
        ("REDIS_URL", "localhost:6379", "unsupported scheme 'localhost'"),
        ("REDIS_URL", "redis://:pw@/0", "redis:// needs a host"),
        ("REDIS_URL", "redis://h:99999", "not a valid URL"),
        ("REDIS_URL", "redis://h/cache", "the path must be a database number, got 'cache'"),
        ("REDIS_URL", "unix://", "unix:// needs a socket path"),
        ("CACHE_NODE_TTL_SECONDS", "5m", "expected a whole number, got '5m'"),
        ("CACHE_NODE_TTL_SECONDS", "0", "must be at least 1, got '0'"),
        ("CACHE_TENANT_TTL_SECONDS", "1.5", "expected a whole number, got '1.5'"),
        ("CACHE_SOCKET_TIMEOUT_SECONDS", "0", "must be greater than 0, got '0'"),
        ("CACHE_SOCKET_TIMEOUT_SECONDS", "nan", "expected a finite number, got 'nan'"),
        ("CACHE_RETRY_AFTER_SECONDS", "-1", "must be at least 0, got '-1'"),
        ("CACHE_RETRY_AFTER_SECONDS", "soon", "expected a number, got 'soon'"),
        ("CACHE_KEY_PREFIX", "jw{x}", "use letters, digits and _ . : - only"),
    ],
)
def test_bad_settings_name_the_variable(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        CacheSettings.from_env({variable: value})
    assert raised.value.variable == variable
    assert problem in raised.value.problem
    assert str(raised.value) == f"{variable}: {raised.value.problem}"
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:hunter2@h/zero",
        "http://user:hunter2@h:6379",
        "redis://user:hunter2@h:port/0",
        "redis://user:hunter2@[::1/0",
    ],
)
def test_a_bad_url_message_never_shows_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        CacheSettings.from_env({"REDIS_URL": url})
    assert raised.value.variable == "REDIS_URL"
    assert "hunter2" not in str(raised.value)


def test_the_url_is_a_secret_in_repr_and_str() -> None:
    settings = CacheSettings.from_env({"REDIS_URL": "redis://user:hunter2@h:6379/0"})
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert settings.redis_url == "redis://user:hunter2@h:6379/0"


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("CACHE_NODE_TTL_SECONDS", "inf", "expected a whole number, got 'inf'"),
        ("CACHE_SOCKET_TIMEOUT_SECONDS", "inf", "expected a finite number, got 'inf'"),
        ("CACHE_SOCKET_TIMEOUT_SECONDS", "-0.5", "must be greater than 0, got '-0.5'"),
        ("CACHE_RETRY_AFTER_SECONDS", "nan", "expected a finite number, got 'nan'"),
        ("CACHE_RETRY_AFTER_SECONDS", "-inf", "expected a finite number, got '-inf'"),
    ],
)
def test_nan_inf_and_negative_numbers_are_rejected(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        CacheSettings.from_env({variable: value})
    assert (raised.value.variable, raised.value.problem) == (variable, problem)


def test_direct_construction_is_validated_too() -> None:
    # Keyword construction (tests, the demo) gets the same checks, named by variable.
    with pytest.raises(ConfigError, match="CACHE_NODE_TTL_SECONDS: must be at least 1, got 0"):
        CacheSettings(url=None, node_ttl=0)
    with pytest.raises(ConfigError, match="REDIS_URL: unsupported scheme 'memcached'"):
        CacheSettings(url="memcached://h")
    with pytest.raises(ConfigError, match="token_ttl: must be at least 1"):
        CacheSettings(token_ttl=0)


def test_keyword_construction_never_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_NODE_TTL_SECONDS", "42")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert CacheSettings(key_prefix="unit") == CacheSettings.from_env({"CACHE_KEY_PREFIX": "unit"})
    assert CacheSettings.from_env().node_ttl == 42


# The client and the process-wide accessor.


def test_make_redis_embedded_shares_one_in_process_server() -> None:
    one, two = make_redis(CacheSettings(url=None)), make_redis(CacheSettings(url=None))
    assert isinstance(one, fakeredis.FakeRedis)
    one.set("unit:shared", "1", ex=5)
    assert two.get("unit:shared") == b"1"
    one.delete("unit:shared")


def test_make_redis_real_has_short_timeouts_and_no_backoff() -> None:
    client = make_redis(CacheSettings(url="redis://127.0.0.1:1/3", socket_timeout=0.4))
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.4, 0.4)
    assert kwargs["db"] == 3 and kwargs["health_check_interval"] > 0
    assert kwargs["retry"].get_retries() == 1  # not redis-py's 10 retries with backoff


@pytest.fixture
def fresh_accessor(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("REDIS_URL", "CACHE_KEY_PREFIX", "CACHE_NODE_TTL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    # A fresh process: no cache, and no settings read yet.
    cache_module.use_cache(None)
    cache_module.use_cache_settings(None)
    yield monkeypatch
    cache_module.use_cache(None)
    cache_module.use_cache_settings(None)


def test_get_cache_is_built_once_from_the_environment(
    fresh_accessor: pytest.MonkeyPatch,
) -> None:
    fresh_accessor.setenv("CACHE_NODE_TTL_SECONDS", "42")
    first = cache_module.get_cache()
    assert first is cache_module.get_cache()
    assert first.settings.node_ttl == 42 and first.settings.embedded
    assert first.read(T1, J1, "n1").available


def test_get_cache_is_built_from_the_installed_settings(
    fresh_accessor: pytest.MonkeyPatch,
) -> None:
    fresh_accessor.setenv("CACHE_NODE_TTL_SECONDS", "42")
    cache_module.use_cache_settings(CacheSettings(url=None, key_prefix="installed", node_ttl=7))
    built = cache_module.get_cache()
    assert (built.settings.key_prefix, built.settings.node_ttl) == ("installed", 7)


def test_use_cache_injects_and_resets(fresh_accessor: pytest.MonkeyPatch, jc: JourneyCache) -> None:
    cache_module.use_cache(jc)
    assert cache_module.get_cache() is jc
    cache_module.use_cache(None)
    assert cache_module.get_cache() is not jc


def test_get_cache_reports_a_bad_environment(fresh_accessor: pytest.MonkeyPatch) -> None:
    fresh_accessor.setenv("REDIS_URL", "http://nope")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        cache_module.get_cache()


def test_the_cache_package_knows_redis_only() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cache; cache.get_cache().read('t', 'j', 'n');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'db','tasks','worker'}))"
    )
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env
    ).stdout
    assert out.strip() == "[]"
