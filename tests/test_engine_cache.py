"""The engine reading through the real Redis cache: counts, invalidation by events, outages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, text, update

from cache import CacheSettings, JourneyCache, build_cache, use_cache
from db.instrumentation import StatementCounter, WireTrace
from db.models import JourneyNode, Message, Tenant
from tasks.events import journey_updated, tenant_updated
from tasks.lookups import JourneyReader
from tests.engine_harness import row_counts, run_step, walk
from tests.factories import (
    JourneyFixture,
    make_contacts,
    make_journey,
    make_journey_contact,
    make_tenant,
)

JOURNEY = [
    ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "check"),
    (
        "check",
        "condition",
        {
            "field": "plan",
            "op": "eq",
            "value": "pro",
            "true_node_id": "@tag",
            "false_node_id": None,
        },
        None,
    ),
    ("tag", "update_contact", {"set": {"seen": True}}, "bye"),
    ("bye", "send_sms", {"body": "Bye {{first_name}}"}, None),
]


@pytest.fixture
def real_cache(redis_url: str, cache_prefix: str) -> Iterator[JourneyCache]:
    cache = build_cache(CacheSettings(url=redis_url, key_prefix=cache_prefix))
    use_cache(cache)
    yield cache
    use_cache(None)
    keys = list(cache.redis.scan_iter(match=f"{cache_prefix}*"))
    if keys:
        cache.redis.delete(*keys)


@pytest.fixture
def journey(pg_engine: Engine) -> JourneyFixture:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(pg_engine, tenant_id, JOURNEY)
    fixture.contacts = make_contacts(pg_engine, tenant_id, 100)
    return fixture


class RoundTrips:
    """Counts connections taken from the Redis client's pool: one per command or script call."""

    def __init__(self, cache: JourneyCache) -> None:
        self.pool = cache.redis.connection_pool
        self.count = 0
        self._original = self.pool.get_connection

    def __enter__(self) -> RoundTrips:
        def counting(*args, **kwargs):
            self.count += 1
            return self._original(*args, **kwargs)

        self.pool.get_connection = counting
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.get_connection = self._original


def test_steady_state_reads_nodes_and_tenants_from_redis_once_per_execution(
    pg_engine, journey, real_cache
) -> None:
    reader = JourneyReader(real_cache)
    jcs = [make_journey_contact(pg_engine, journey, c) for c in journey.contacts]
    with (
        StatementCounter(pg_engine) as counter,
        RoundTrips(real_cache) as redis_trips,
        WireTrace(pg_engine) as wire,
    ):
        executions = sum(
            len(walk(journey.tenant_id, jc, journey.nodes["hello"], reader=reader)) for jc in jcs
        )
    assert executions == 400
    node_and_tenant_reads = counter.touching("journey_nodes", "tenants")
    # One cold miss loads the journey and the tenant; every other execution is a hit.
    assert node_and_tenant_reads == 2
    assert node_and_tenant_reads / executions < 0.01
    # One read per execution, plus the two fills after the cold miss.
    assert redis_trips.count == executions + 2
    stats = real_cache.stats()
    assert stats["node"]["misses"] == 1 and stats["node"]["hits"] == executions - 1
    assert real_cache.hit_ratio("tenant") == pytest.approx((executions - 1) / executions)
    # Per step on PostgreSQL: ONE read (state, tenant and journey status, contact, recent
    # executions as one JSON array, the loop guard's times) and ONE write (the conditional
    # claim with the execution, message, attribute merge and next state as data-modifying CTEs),
    # each in autocommit: 2 statements, 2 round trips on the wire, no BEGIN, no COMMIT.
    assert counter.by_kind["SELECT"] == executions + node_and_tenant_reads
    assert counter.by_kind["WITH"] == executions
    assert counter.by_kind["COMMIT"] == 0
    assert wire.available, wire.reason
    # The cold miss read the journey's nodes and the tenant in the same connection.
    # psycopg prepares a statement on its 5th use, one extra round trip per distinct statement
    # per connection (here: the read and four shapes of write), then never again.
    once_per_statement = wire.roundtrips - (2 * executions + node_and_tenant_reads)
    assert 0 <= once_per_statement <= 6
    assert not wire.queries  # no simple-protocol BEGIN or COMMIT
    assert counter.total == 2 * executions + node_and_tenant_reads


def test_journey_updated_event_makes_waiting_contacts_continue_on_the_new_config(
    pg_engine, journey, real_cache
) -> None:
    reader = JourneyReader(real_cache)
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    run_step(journey.tenant_id, jc, journey.nodes["hello"], reader=reader)  # caches the journey
    with pg_engine.begin() as conn:
        conn.execute(
            update(JourneyNode)
            .where(JourneyNode.id == journey.nodes["bye"])
            .values(config={"body": "Farewell {{first_name}}"})
        )
    journey_updated.run(tenant_id=str(journey.tenant_id), journey_id=str(journey.journey_id))
    walk(journey.tenant_id, jc, journey.nodes["check"], 1, reader=reader)
    with pg_engine.connect() as conn:
        bodies = sorted(conn.execute(select(Message.body)).scalars())
    assert bodies == ["Farewell Ann0", "Hi Ann0"]


def test_without_the_event_the_cache_would_serve_the_old_node(
    pg_engine, journey, real_cache
) -> None:
    """The control for the test above: it is the event that makes the difference."""
    reader = JourneyReader(real_cache)
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    run_step(journey.tenant_id, jc, journey.nodes["hello"], reader=reader)
    with pg_engine.begin() as conn:
        conn.execute(
            update(JourneyNode)
            .where(JourneyNode.id == journey.nodes["bye"])
            .values(config={"body": "Farewell"})
        )
    walk(journey.tenant_id, jc, journey.nodes["check"], 1, reader=reader)
    with pg_engine.connect() as conn:
        assert "Bye Ann0" in conn.execute(select(Message.body)).scalars().all()


def test_suspended_tenant_stops_sends_at_once_even_with_a_warm_cache(
    pg_engine, journey, real_cache
) -> None:
    reader = JourneyReader(real_cache)
    first, second = (make_journey_contact(pg_engine, journey, c) for c in journey.contacts[:2])
    walk(journey.tenant_id, first, journey.nodes["hello"], reader=reader)  # warm: tenant ACTIVE
    with pg_engine.begin() as conn:
        conn.execute(
            update(Tenant).where(Tenant.id == journey.tenant_id).values(status="SUSPENDED")
        )
    # No tenant_updated event yet: the cached tenant still says ACTIVE, the database decides.
    held = run_step(journey.tenant_id, second, journey.nodes["hello"], reader=reader)
    assert held.outcome == "held" and row_counts(pg_engine, second)["messages"] == 0
    with pg_engine.begin() as conn:
        conn.execute(update(Tenant).where(Tenant.id == journey.tenant_id).values(status="ACTIVE"))
    assert tenant_updated.run(tenant_id=str(journey.tenant_id)) == {"resumed": 1}
    assert row_counts(pg_engine, second)["status"] == "ACTIVE"


@pytest.mark.parametrize("outage", ["closed_port", "flushed"])
def test_journeys_complete_when_redis_is_down_or_flushed(
    pg_engine, journey, real_cache, outage
) -> None:
    jcs = [make_journey_contact(pg_engine, journey, c) for c in journey.contacts[:20]]
    reader = JourneyReader(real_cache)
    for jc in jcs[:10]:
        walk(journey.tenant_id, jc, journey.nodes["hello"], reader=reader)
    if outage == "closed_port":
        reader = JourneyReader(
            build_cache(
                CacheSettings(url="redis://127.0.0.1:1/0", key_prefix="jwdown", socket_timeout=0.1)
            )
        )
    else:
        for key in real_cache.redis.scan_iter(match=f"{real_cache.settings.key_prefix}*"):
            real_cache.redis.delete(key)
    for jc in jcs[10:]:
        walk(journey.tenant_id, jc, journey.nodes["hello"], reader=reader)
    for jc in jcs:
        assert row_counts(pg_engine, jc)["status"] == "COMPLETED"
    if outage == "closed_port":
        assert reader.cache is not None and reader.cache.stats()["node"]["errors"] >= 1


def test_a_node_is_never_served_to_another_tenant(pg_engine, journey, real_cache) -> None:
    reader = JourneyReader(real_cache)
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    run_step(journey.tenant_id, jc, journey.nodes["hello"], reader=reader)
    other = make_tenant(pg_engine, name="Other")
    with pg_engine.connect() as conn:
        node, tenant = reader.node_and_tenant(
            conn, other, journey.journey_id, journey.nodes["hello"]
        )  # type: ignore[arg-type]
    assert node is None and tenant is not None and tenant.id == other
    assert tenant.id != journey.tenant_id
    with pg_engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM journey_nodes WHERE tenant_id = :t"), {"t": other}
            ).scalar()
            == 0
        )
