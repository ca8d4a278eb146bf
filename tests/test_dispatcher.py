"""The dispatcher's pieces against the real services: fair claims of scheduled steps, late steps
only while the queues are quiet, doubling grace, lanes, unpublished steps, send pacing."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, select, update

from cache import CacheSettings, build_cache
from cache.send_rate import PACE_FRACTION, SendRateLimiter
from db import dispatch
from db.clock import as_utc, seconds_from_now
from db.engine import transaction
from db.models import DispatchLane, JourneyContact
from tasks import names
from tasks.base import publish
from tasks.engine import Followup, execute_batch_kwargs
from tasks.lanes import lane_for
from tasks.settings import EngineSettings, use_engine_settings
from tests.engine_harness import make_due, row_counts, run_step
from tests.factories import make_contacts, make_journey, make_journey_contact, make_tenant
from tests.services import unique_name
from tests.worker_process import broker_namespace
from worker.app import create_app, publish_retry_policy
from worker.settings import WorkerSettings

TWO_SENDS = [
    ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "bye"),
    ("bye", "send_sms", {"body": "Bye {{first_name}}"}, None),
]
WAIT_THEN_SEND = [
    ("pause", "wait", {"seconds": 3600}, "after"),
    ("after", "send_sms", {"body": "later"}, None),
]


def waiting_rows(engine: Engine, count: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A tenant with `count` contacts WAITING at a wait whose time has come."""
    tenant = make_tenant(engine)
    journey = make_journey(engine, tenant, WAIT_THEN_SEND)
    jcs = [make_journey_contact(engine, journey, c) for c in make_contacts(engine, tenant, count)]
    with engine.begin() as conn:
        conn.execute(
            update(JourneyContact)
            .where(JourneyContact.id.in_(jcs))
            .values(
                status="WAITING",
                current_node_id=journey.nodes["after"],
                step_seq=1,
                due_at=seconds_from_now(-600),
            )
        )
    return tenant, jcs


# --- lanes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "kwargs", "lane"),
    [
        (names.DISPATCH_DUE, {}, names.DISPATCH_QUEUE),
        (names.EXECUTE_BATCH, {"journey_contacts": [["x", 0]] * 49}, names.DEFAULT_QUEUE),
        (names.EXECUTE_BATCH, {"journey_contacts": [["x", 0]] * 50}, names.BULK_QUEUE),
        (names.DELIVER_MESSAGES, {"message_ids": ["m"] * 200}, names.BULK_QUEUE),
        (names.DELIVER_MESSAGES, {"message_ids": ["m"] * 3}, names.DEFAULT_QUEUE),
        (names.EXECUTE_NODE, {"journey_contact_id": "x"}, names.DEFAULT_QUEUE),
    ],
)
def test_lanes_by_task_and_size(task: str, kwargs: dict, lane: str) -> None:
    assert lane_for(task, kwargs, bulk_batch_min=50) == lane


def test_the_app_consumes_every_lane_routes_the_dispatcher_and_sends_no_events_by_default() -> None:
    app = create_app(WorkerSettings())
    assert [q.name for q in app.conf.task_queues] == list(names.WORKER_QUEUES)
    assert app.conf.task_routes[names.DISPATCH_DUE] == {"queue": names.DISPATCH_QUEUE}
    assert app.conf.worker_send_task_events is False
    assert app.conf.task_send_sent_event is False
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is False
    watched = create_app(WorkerSettings(task_events=True))
    assert watched.conf.worker_send_task_events and watched.conf.task_send_sent_event


def test_the_publish_retry_policy_covers_a_thirty_second_restart() -> None:
    policy = publish_retry_policy(35)
    waits = [
        min(i * policy["interval_step"], policy["interval_max"])
        for i in range(policy["max_retries"])
    ]
    assert 35 <= sum(waits) < 45


# --- claims ----------------------------------------------------------------------------------


def test_scheduled_steps_are_claimed_fairly_across_tenants(pg_engine) -> None:
    """A tenant's thousand older due waits do not stand in front of another tenant's few."""
    _big, big_jcs = waiting_rows(pg_engine, 1000)
    _small, small_jcs = waiting_rows(pg_engine, 5)
    with pg_engine.begin() as conn:  # the small tenant's waits came due last
        conn.execute(
            update(JourneyContact)
            .where(JourneyContact.id.in_(small_jcs))
            .values(due_at=seconds_from_now(-1))
        )
    with transaction() as session:
        due = dispatch.claim_scheduled_steps(session, per_tenant=200, limit=300, grace_seconds=30)
    claimed = {d.journey_contact_id for d in due}
    assert set(small_jcs) <= claimed
    assert len(claimed & set(big_jcs)) == 200  # the big tenant's share of this claim
    lags = {d.journey_contact_id: d.late_seconds for d in due}
    assert all(lags[jc] >= 599 for jc in claimed & set(big_jcs))
    assert all(0 < lags[jc] < 60 for jc in small_jcs)


def test_scheduled_claims_on_sqlite_take_the_oldest(sqlite_engine) -> None:
    _tenant, jcs = waiting_rows(sqlite_engine, 7)
    with transaction() as session:
        due = dispatch.claim_scheduled_steps(session, per_tenant=5, limit=5, grace_seconds=30)
    assert len(due) == 5 and {d.journey_contact_id for d in due} <= set(jcs)
    assert all(d.late_seconds >= 599 for d in due)


def test_a_late_steps_grace_doubles_with_each_redispatch(store_engine) -> None:
    tenant = make_tenant(store_engine)
    journey = make_journey(store_engine, tenant, TWO_SENDS)
    jc = make_journey_contact(store_engine, journey, make_contacts(store_engine, tenant, 1)[0])
    graces = []
    for _ in range(3):
        make_due(store_engine, jc)
        with transaction() as session:
            [late] = dispatch.claim_late_steps(session, limit=10, grace_seconds=10)
        with store_engine.connect() as conn:
            due_at, now = conn.execute(
                select(JourneyContact.due_at, seconds_from_now(0)).where(JourneyContact.id == jc)
            ).one()
        graces.append(round((as_utc(due_at) - as_utc(now)).total_seconds()))
        assert late.journey_contact_id == jc
    assert graces == [20, 40, 80]
    assert row_counts(store_engine, jc)["step"] == 0


def test_scheduled_and_late_are_told_apart(store_engine) -> None:
    """A due wait is scheduled (published whatever the backlog); a published step past its
    grace is late (published only while the queues are quiet); a released or unpublished step
    is scheduled."""
    tenant = make_tenant(store_engine)
    journey = make_journey(store_engine, tenant, TWO_SENDS)
    jcs = [
        make_journey_contact(store_engine, journey, c)
        for c in make_contacts(store_engine, tenant, 3)
    ]
    make_due(store_engine, *jcs)
    with transaction() as session:
        assert dispatch.mark_unpublished(session, tenant, [(jcs[0], 0), (jcs[1], 7)]) == 1
    with transaction() as session:
        scheduled = dispatch.claim_scheduled_steps(
            session, per_tenant=10, limit=10, grace_seconds=30
        )
    assert [d.journey_contact_id for d in scheduled] == [jcs[0]]
    with transaction() as session:
        late = dispatch.claim_late_steps(session, limit=10, grace_seconds=30)
    assert sorted(d.journey_contact_id for d in late) == sorted(jcs[1:])
    # Running the step clears the mark: a later failure of its next publish marks anew.
    run_step(tenant, jcs[0], journey.nodes["hello"], 0)
    with store_engine.connect() as conn:
        assert not conn.execute(
            select(JourneyContact.unpublished).where(JourneyContact.id == jcs[0])
        ).scalar()


def test_lanes_are_quiet_only_after_being_seen_empty_for_a_while(store_engine) -> None:
    with transaction() as session:
        # Seen for the first time: nobody knows what they held, so busy now.
        assert dispatch.observe_lanes(session, {"a": 0, "b": 0}) < 1
    with store_engine.begin() as conn:
        conn.execute(update(DispatchLane).values(busy_at=seconds_from_now(-100)))
    with transaction() as session:
        assert 99 < dispatch.observe_lanes(session, {"a": 0, "b": 0}) < 110
    with transaction() as session:
        assert dispatch.observe_lanes(session, {"a": 3, "b": 0}) < 1  # a backlog
    with store_engine.begin() as conn:
        conn.execute(update(DispatchLane).values(busy_at=seconds_from_now(-100)))
    with transaction() as session:
        assert dispatch.observe_lanes(session, {"a": 0, "b": None}) < 1  # could not tell


# --- the task, on a real broker ---------------------------------------------------------------


@pytest.fixture
def redis_app(pg_engine: Engine) -> Iterator[tuple[Celery, str]]:
    with broker_namespace("redis") as url:
        app = create_app(WorkerSettings(broker_url=url))
        app.set_current()
        yield app, url


def test_a_backlog_holds_late_steps_back_and_quiet_queues_release_them(
    pg_engine, redis_app
) -> None:
    from tasks.dispatch import dispatch_due

    _app, url = redis_app
    _tenant, waiting = waiting_rows(pg_engine, 3)
    tenant = make_tenant(pg_engine)
    journey = make_journey(pg_engine, tenant, TWO_SENDS)
    late = [
        make_journey_contact(pg_engine, journey, c) for c in make_contacts(pg_engine, tenant, 4)
    ]
    make_due(pg_engine, *late)
    broker = redis.Redis.from_url(url)
    broker.lpush(names.BULK_QUEUE, b"a queued batch")  # the backlog
    use_engine_settings(EngineSettings(redispatch_quiet_seconds=50))
    try:
        counts = dispatch_due.run()
        assert (counts["steps"], counts["late"]) == (3, 0)  # waits fire; late steps wait
        assert broker.llen(names.DEFAULT_QUEUE) == 1  # one small batch of the three waits
        broker.delete(names.BULK_QUEUE, names.DEFAULT_QUEUE)  # drained
        assert dispatch_due.run()["late"] == 0  # not quiet for long enough yet
        with pg_engine.begin() as conn:
            conn.execute(update(DispatchLane).values(busy_at=seconds_from_now(-60)))
        assert dispatch_due.run()["late"] == 4
    finally:
        use_engine_settings(None)
    assert {row_counts(pg_engine, jc)["status"] for jc in late} == {"ACTIVE"}
    with pg_engine.connect() as conn:
        counts_by_jc = dict(
            conn.execute(
                select(JourneyContact.id, JourneyContact.redispatch_count).where(
                    JourneyContact.id.in_(late + waiting)
                )
            ).all()
        )
    assert [counts_by_jc[jc] for jc in late] == [1] * 4
    assert [counts_by_jc[jc] for jc in waiting] == [0] * 3


def test_a_publish_that_fails_marks_its_steps_unpublished(pg_engine) -> None:
    """The broker is unreachable past the retry policy: the steps are due for the dispatcher at
    once (scheduled), not after a grace period."""
    tenant = make_tenant(pg_engine)
    journey = make_journey(pg_engine, tenant, TWO_SENDS)
    jcs = [make_journey_contact(pg_engine, journey, c) for c in make_contacts(pg_engine, tenant, 2)]
    nowhere = create_app(
        WorkerSettings(broker_url="redis://127.0.0.1:1/0", publish_retry_seconds=0)
    )
    followup = Followup(
        names.EXECUTE_BATCH, execute_batch_kwargs(tenant, journey.nodes["hello"], [(jcs[0], 0)])
    )
    assert publish(nowhere, [followup]) == 0
    with transaction() as session:
        due = dispatch.claim_scheduled_steps(session, per_tenant=10, limit=10, grace_seconds=30)
    assert [d.journey_contact_id for d in due] == [jcs[0]]


# --- send pacing ------------------------------------------------------------------------------


@pytest.fixture
def limiter_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_send_slots_are_paced_cluster_wide_and_bounded_by_the_horizon(limiter_redis) -> None:
    prefix = unique_name("jwrate")
    # Two processes' limiters on one Redis: one pace between them.
    first, second = (SendRateLimiter(limiter_redis, prefix) for _ in range(2))
    a = first.reserve("t1", 10, 8, 1.0)
    b = second.reserve("t1", 10, 8, 1.0)
    interval = 1 / (10 * PACE_FRACTION)
    assert a.shared and b.shared
    # One second's worth at most (at 95% of the rate), then the other limiter continues.
    assert len(a.offsets) == 8 and len(b.offsets) == 2
    slots = [*a.offsets, *b.offsets]
    assert all(abs(y - x - interval) < 0.02 for x, y in itertools.pairwise(a.offsets))
    assert b.offsets[0] >= a.offsets[-1] + interval - 0.02
    assert b.next_free > 1.0 and len(slots) == 10
    # Another tenant has its own pace.
    assert len(first.reserve("t2", 10, 3, 1.0).offsets) == 3
    limiter_redis.delete(first.key("t1"), first.key("t2"))


def test_send_pacing_falls_back_to_this_process_when_redis_is_away() -> None:
    limiter = SendRateLimiter(
        redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2), "jw"
    )
    reservation = limiter.reserve("t", 5, 20, 1.0)
    assert not reservation.shared
    assert len(reservation.offsets) == 5  # 1 s of 5/s at 95%: 0, 0.21, ..., 0.84
    assert reservation.offsets[0] == pytest.approx(0, abs=0.01)


def test_the_embedded_cache_paces_too() -> None:
    cache = build_cache(CacheSettings(url=None, key_prefix=unique_name("jwrate")))
    limiter = SendRateLimiter(cache.redis, cache.settings.key_prefix)
    reservation = limiter.reserve("t", 100, 1000, 0.5)
    assert reservation.shared and 45 <= len(reservation.offsets) <= 49
    assert timedelta(seconds=reservation.next_free) > timedelta(seconds=0.45)


def test_send_rate_needs_a_positive_rate(limiter_redis) -> None:
    with pytest.raises(ValueError, match="positive"):
        SendRateLimiter(limiter_redis, "jw").reserve("t", 0, 1, 1.0)
