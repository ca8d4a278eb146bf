"""End to end: real `celery -A worker worker` processes, real brokers, real PostgreSQL.

Every message upstream would send is published with kombu alone (tests/kombu_producer.py),
never through this project's Celery app, so these tests also prove the upstream contract.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e_rig import (
    Rig,
    all_finished,
    all_messages_sent,
    assert_one_execution_per_step,
    assert_one_message_per_send,
    executed_in_batches,
    journey_statuses,
    pid_with_local_port,
    rows,
    scalar,
    step_lines,
)
from tests.factories import (
    make_contacts,
    make_journey,
    make_journey_contact,
    make_tenant,
)
from tests.http_stub import http_stub
from tests.kombu_producer import build_message
from tests.test_operations import free_port, scrape, total
from tests.worker_process import wait_until

pytestmark = pytest.mark.slow

ENROLL = "journeys.enroll"
EXECUTE_NODE = "journeys.execute_node"
PRO = {"first_name": "Ann", "plan": "pro"}
BASIC = {"first_name": "Bob", "plan": "basic"}

# send_sms -> wait 1 s -> condition on plan -> send_sms (pro) or exit (everyone else)
UPSTREAM_JOURNEY = [
    ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "pause"),
    ("pause", "wait", {"seconds": 1}, "check"),
    (
        "check",
        "condition",
        {
            "field": "plan",
            "op": "eq",
            "value": "pro",
            "true_node_id": "@thanks",
            "false_node_id": "@bye",
        },
        None,
    ),
    ("thanks", "send_sms", {"body": "Thanks {{first_name}}"}, None),
    ("bye", "exit", {}, None),
]
ONE_SMS = [("hello", "send_sms", {"body": "Hi {{first_name}}"}, None)]


# --- a slow webhook ---------------------------------------------------------------------------


@dataclass
class WebhookCall:
    key: str
    payload: dict[str, Any]
    client_port: int
    at: float


class SlowWebhook:
    """An HTTP server on 127.0.0.1 that answers 200 after `delay` seconds, recording each call."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: list[WebhookCall] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                with hook._lock:
                    hook.calls.append(
                        WebhookCall(
                            self.headers.get("Idempotency-Key", ""),
                            payload,
                            self.client_address[1],
                            time.monotonic(),
                        )
                    )
                time.sleep(hook.delay)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the caller was killed while we slept

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def snapshot(self) -> list[WebhookCall]:
        with self._lock:
            return list(self.calls)

    def wait_for_calls(self, count: int, timeout: float = 30) -> list[WebhookCall]:
        wait_until(lambda: len(self.snapshot()) >= count, timeout=timeout, interval=0.05)
        return self.snapshot()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[SlowWebhook]:
    """A webhook that takes 3 s to answer: long enough to kill or stop a worker mid-node."""
    hook = SlowWebhook(delay=3.0)
    try:
        yield hook
    finally:
        hook.close()


def webhook_journey(url: str) -> list[tuple[str, str, dict[str, Any], str | None]]:
    """webhook (slow) -> send_sms: the message proves the step after the webhook ran once."""
    return [
        ("call", "webhook", {"url": url, "method": "POST", "timeout_seconds": 10}, "after"),
        ("after", "send_sms", {"body": "After the call, {{first_name}}"}, None),
    ]


# --- 2. the upstream flow, published with kombu only ------------------------------------------


def test_upstream_flow_published_with_kombu(broker_url: str, producer, rig: Rig) -> None:
    db = rig.db
    tenant_id = make_tenant(db)
    journey = make_journey(db, tenant_id, UPSTREAM_JOURNEY)
    pro = make_contacts(db, tenant_id, 10, attributes=PRO)
    basic = make_contacts(db, tenant_id, 10, attributes=BASIC)
    worker = rig.start(rig.env(broker_url), beat=True)

    producer.publish(
        ENROLL,
        {
            "tenant_id": str(tenant_id),
            "journey_id": str(journey.journey_id),
            "contact_ids": [str(c) for c in pro + basic],
        },
    )
    wait_until(lambda: all_finished(db, journey.journey_id, 20), timeout=40)
    assert journey_statuses(db, journey.journey_id) == {"COMPLETED": 10, "EXITED": 10}
    wait_until(lambda: all_messages_sent(db), timeout=20)
    assert scalar(db, "SELECT count(*) FROM messages") == 10 * 2 + 10
    assert_one_message_per_send(db)
    assert_one_execution_per_step(db)

    # Upstream inserts the journey contact itself and publishes the entry node without a step,
    # twice (an at-least-once producer): the first runs the step, the second is a duplicate.
    late = make_contacts(db, tenant_id, 1, attributes=PRO)[0]
    jc = make_journey_contact(db, journey, late, entry="hello")
    message = build_message(
        EXECUTE_NODE,
        {
            "tenant_id": str(tenant_id),
            "journey_contact_id": str(jc),
            "node_id": str(journey.nodes["hello"]),
        },
    )
    producer.publish_message(message)
    producer.publish_message(message)
    wait_until(
        lambda: (
            scalar(db, "SELECT status FROM journey_contacts WHERE id = :id", id=jc) == "COMPLETED"
        ),
        timeout=30,
    )
    wait_until(lambda: all_messages_sent(db), timeout=20)
    wait_until(
        lambda: any(m.group("jc") == str(jc) for m in step_lines(worker.log(), "duplicate")),
        timeout=10,
    )
    steps = rows(
        db,
        "SELECT e.step_seq, n.type FROM journey_node_executions e "
        "JOIN journey_nodes n ON n.id = e.node_id WHERE e.journey_contact_id = :id "
        "ORDER BY e.step_seq",
        id=jc,
    )
    assert [tuple(s) for s in steps] == [
        (0, "send_sms"),
        (1, "wait"),
        (2, "condition"),
        (3, "send_sms"),
    ]
    assert scalar(db, "SELECT count(*) FROM messages WHERE contact_id = :c", c=late) == 2
    assert_one_message_per_send(db)
    assert_one_execution_per_step(db)
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0
    assert worker.proc.poll() is None


# --- 3. poison: bad messages fail once, visibly, and the worker carries on --------------------


@dataclass
class BadCase:
    name: str
    task: str
    kwargs: dict[str, Any]
    error: str
    args: list[Any] = field(default_factory=list)
    # ids the worker's error line must name
    ids: list[str] = field(default_factory=list)
    task_id: str = ""


def test_bad_messages_fail_once_and_visibly(broker_url: str, producer, rig: Rig) -> None:
    db = rig.db
    tenant = make_tenant(db)
    other_tenant = make_tenant(db, name="Other")
    good = make_journey(db, tenant, ONE_SMS)
    contacts = make_contacts(db, tenant, 6)
    theirs = make_journey(db, other_tenant, ONE_SMS)
    their_jc = make_journey_contact(db, theirs, make_contacts(db, other_tenant, 1)[0])
    ours_jc = make_journey_contact(db, good, contacts[0])
    bad_config = make_journey(db, tenant, [("bad", "send_sms", {"body": ""}, None)])
    bad_config_jc = make_journey_contact(db, bad_config, contacts[1])
    unknown_type = make_journey(db, tenant, [("fax", "fax", {"to": "+15550000000"}, None)])
    unknown_type_jc = make_journey_contact(db, unknown_type, contacts[2])
    node = str(good.nodes["hello"])
    t, jc = str(tenant), str(ours_jc)
    nowhere, no_journey = str(uuid.uuid4()), str(uuid.uuid4())

    cases = [
        BadCase(
            "missing argument",
            EXECUTE_NODE,
            {"tenant_id": t, "node_id": node},
            "missing argument(s) journey_contact_id",
            ids=[t, node],
        ),
        BadCase(
            "non-UUID id",
            EXECUTE_NODE,
            {"tenant_id": t, "journey_contact_id": "not-a-uuid", "node_id": node},
            "journey_contact_id is not a UUID: 'not-a-uuid'",
            ids=[t, "not-a-uuid"],
        ),
        BadCase(
            "positional arguments",
            EXECUTE_NODE,
            {},
            "positional arguments are not accepted, got 3",
            args=[t, jc, node],
        ),
        BadCase(
            "unknown journey contact",
            EXECUTE_NODE,
            {"tenant_id": t, "journey_contact_id": nowhere, "node_id": node},
            f"unknown_journey_contact: {nowhere}",
            ids=[t, nowhere],
        ),
        BadCase(
            "another tenant's journey contact",
            EXECUTE_NODE,
            {
                "tenant_id": t,
                "journey_contact_id": str(their_jc),
                "node_id": str(theirs.nodes["hello"]),
            },
            f"unknown_journey_contact: {their_jc}",
            ids=[t, str(their_jc)],
        ),
        BadCase(
            "unknown task argument",
            EXECUTE_NODE,
            {"tenant_id": t, "journey_contact_id": jc, "node_id": node, "priority": "high"},
            "unknown argument(s) priority",
            ids=[t, jc],
        ),
        BadCase(
            "enroll in an unknown journey",
            ENROLL,
            {"tenant_id": t, "journey_id": no_journey, "contact_ids": [str(contacts[3])]},
            f"unknown_journey: {no_journey}",
            ids=[t, no_journey],
        ),
        BadCase(
            "enroll of 1,001 contacts",
            ENROLL,
            {
                "tenant_id": t,
                "journey_id": str(good.journey_id),
                "contact_ids": [str(uuid.uuid4()) for _ in range(1001)],
            },
            "contact_ids has 1001 ids; at most 1000 per message",
            ids=[t, str(good.journey_id)],
        ),
    ]
    # Problems only the engine can see: the journey contact fails with the reason.
    engine_cases = {
        bad_config_jc: ("invalid_node_config: send_sms needs a non-empty string body", bad_config),
        unknown_type_jc: ("invalid_node_config: unknown node type 'fax'", unknown_type),
    }

    worker = rig.start(rig.env(broker_url))
    for case in cases:
        case.task_id = producer.publish(case.task, case.kwargs, args=case.args)
    for jc_id, (_reason, fixture) in engine_cases.items():
        producer.publish(
            EXECUTE_NODE,
            {
                "tenant_id": t,
                "journey_contact_id": str(jc_id),
                "node_id": str(next(iter(fixture.nodes.values()))),
            },
        )

    def failed_engine_cases() -> int:
        return scalar(
            db,
            "SELECT count(*) FROM journey_contacts WHERE id IN (:a, :b) AND status = 'FAILED'",
            a=bad_config_jc,
            b=unknown_type_jc,
        )

    wait_until(
        lambda: (
            scalar(db, "SELECT count(*) FROM task_failures") >= len(cases)
            and failed_engine_cases() == 2
        ),
        timeout=30,
    )

    # The worker is alive and still does good work afterwards.
    assert worker.proc.poll() is None
    fresh = make_contacts(db, tenant, 3)
    producer.publish(
        ENROLL,
        {
            "tenant_id": t,
            "journey_id": str(good.journey_id),
            "contact_ids": [str(c) for c in fresh],
        },
    )
    wait_until(
        lambda: (
            scalar(
                db,
                "SELECT count(*) FROM journey_contacts WHERE journey_id = :j AND status = 'COMPLETED'",
                j=good.journey_id,
            )
            == 3
        ),
        timeout=30,
    )
    wait_until(lambda: all_messages_sent(db), timeout=20)
    assert worker.proc.poll() is None

    # Each bad message failed exactly once (nothing was retried) with a clear error.
    failures = rows(db, "SELECT task_id, task_name, error, journey_contact_id FROM task_failures")
    by_task = Counter(row.task_id for row in failures)
    assert by_task == Counter({case.task_id: 1 for case in cases})
    errors = {row.task_id: (row.task_name, row.error) for row in failures}
    for case in cases:
        assert errors[case.task_id] == (case.task, case.error), case.name

    # Engine-detected problems fail the contact, with the reason on the execution row too.
    for jc_id, (reason, _fixture) in engine_cases.items():
        status, status_reason = rows(
            db, "SELECT status, status_reason FROM journey_contacts WHERE id = :id", id=jc_id
        )[0]
        assert (status, status_reason) == ("FAILED", reason)
        assert [
            tuple(r)
            for r in rows(
                db,
                "SELECT status, error FROM journey_node_executions WHERE journey_contact_id = :id",
                id=jc_id,
            )
        ] == [("FAILED", reason)]

    # A bad message says nothing about a contact: ours and theirs are untouched.
    for untouched in (ours_jc, their_jc):
        state = rows(
            db, "SELECT status, step_seq FROM journey_contacts WHERE id = :id", id=untouched
        )[0]
        assert tuple(state) == ("ACTIVE", 0)
    assert (
        scalar(
            db,
            "SELECT count(*) FROM journey_node_executions WHERE journey_contact_id IN (:a, :b)",
            a=ours_jc,
            b=their_jc,
        )
        == 0
    )

    log = worker.log()
    assert "Retry in" not in log
    assert "task retry" not in log
    error_lines = [line for line in log.splitlines() if "ERROR/" in line]
    for case in cases:
        named = [
            line for line in error_lines if "task failed for good" in line and case.task_id in line
        ]
        assert len(named) == 1, case.name
        for id_ in case.ids:
            assert id_ in named[0], (case.name, id_)
        assert case.error in named[0], case.name
    for jc_id, (reason, _fixture) in engine_cases.items():
        assert any(
            "step failed " in line and f"journey_contact_id={jc_id}" in line and reason in line
            for line in error_lines
        ), jc_id


# --- 4. SIGKILL of the whole worker in the middle of a node -----------------------------------


def test_worker_killed_mid_node_runs_the_step_exactly_once(
    broker_url: str, producer, rig: Rig, webhook: SlowWebhook
) -> None:
    """RabbitMQ redelivers the unacknowledged message as soon as the connection drops. Redis
    would only after its visibility timeout (60 s at least), so there the due-step dispatcher
    re-publishes the step after REDISPATCH_GRACE_SECONDS."""
    db = rig.db
    on_redis = broker_url.startswith("redis")
    tenant = make_tenant(db)
    journey = make_journey(db, tenant, webhook_journey(webhook.url))
    contact = make_contacts(db, tenant, 1)[0]
    jc = make_journey_contact(db, journey, contact)
    extra = (
        {"REDISPATCH_GRACE_SECONDS": "2", "BROKER_VISIBILITY_TIMEOUT_SECONDS": "60"}
        if on_redis
        else {}
    )
    env = rig.env(broker_url, **extra)
    # On RabbitMQ no dispatcher runs at all: only the broker can bring the step back.
    first = rig.start(env, name="w1", beat=on_redis)
    task_id = producer.publish(
        EXECUTE_NODE,
        {
            "tenant_id": str(tenant),
            "journey_contact_id": str(jc),
            "node_id": str(journey.nodes["call"]),
        },
    )
    webhook.wait_for_calls(1, timeout=20)
    first.kill_all()  # the request is in flight: 3 s before the webhook answers

    # Killed inside the transaction: nothing of the step was committed.
    assert scalar(db, "SELECT count(*) FROM journey_node_executions") == 0
    assert scalar(db, "SELECT step_seq FROM journey_contacts WHERE id = :id", id=jc) == 0
    if on_redis:
        unacked = redis.Redis.from_url(broker_url).hvals("unacked")
        assert any(task_id.encode() in raw for raw in unacked), "message not held as unacked"

    second = rig.start(env, name="w2", beat=on_redis)
    wait_until(
        lambda: (
            scalar(db, "SELECT status FROM journey_contacts WHERE id = :id", id=jc) == "COMPLETED"
        ),
        timeout=30,
    )
    wait_until(lambda: all_messages_sent(db), timeout=20)

    calls = webhook.snapshot()
    assert [c.key for c in calls] == [f"{jc}:0", f"{jc}:0"]
    executions = rows(
        db,
        "SELECT e.step_seq, n.type, e.status FROM journey_node_executions e "
        "JOIN journey_nodes n ON n.id = e.node_id WHERE e.journey_contact_id = :id "
        "ORDER BY e.step_seq",
        id=jc,
    )
    assert [tuple(e) for e in executions] == [
        (0, "webhook", "COMPLETED"),
        (1, "send_sms", "COMPLETED"),
    ]
    assert scalar(db, "SELECT count(*) FROM messages") == 1
    assert_one_message_per_send(db)
    received_again = f"journeys.execute_node[{task_id}] received" in second.log()
    # RabbitMQ hands the very same message to the new worker; on Redis it is still parked.
    assert received_again is not on_redis
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0


# --- 5. one child SIGKILLed mid-node (Redis): acknowledged, re-published by the dispatcher -----


def test_child_killed_mid_node_is_redispatched(
    redis_broker_url: str, producer, rig: Rig, webhook: SlowWebhook
) -> None:
    db = rig.db
    tenant = make_tenant(db)
    journey = make_journey(db, tenant, webhook_journey(webhook.url))
    jc = make_journey_contact(db, journey, make_contacts(db, tenant, 1)[0])
    env = rig.env(redis_broker_url, REDISPATCH_GRACE_SECONDS="2")
    worker = rig.start(env, concurrency=1, beat=True)
    task_id = producer.publish(
        EXECUTE_NODE,
        {
            "tenant_id": str(tenant),
            "journey_contact_id": str(jc),
            "node_id": str(journey.nodes["call"]),
        },
    )
    # The row lock held by the running step keeps the dispatcher off this upstream-created row
    # (due_at NULL, so due once older than the grace period) until the step's child is gone.
    call = webhook.wait_for_calls(1, timeout=20)[0]
    children = worker.children()  # the pool child and the embedded beat
    victim = pid_with_local_port(children, call.client_port)
    assert victim is not None, "no worker child holds the webhook connection"
    os.kill(victim, signal.SIGKILL)

    # The pool notices the lost child at once (SIGCHLD) or on its 5 s maintenance timer.
    worker.wait_for_log("WorkerLostError", timeout=15)
    # task_reject_on_worker_lost=False: the message was acknowledged, not requeued.
    broker = redis.Redis.from_url(redis_broker_url)

    def holds(key: str) -> bool:
        raw = broker.lrange(key, 0, -1) if key == "journeys" else broker.hvals(key)
        return any(task_id.encode() in item for item in raw)

    # Acknowledged (a moment after the WorkerLostError line), never put back on the queue.
    wait_until(lambda: not holds("unacked"), timeout=5, interval=0.1)
    assert not holds("journeys")

    wait_until(
        lambda: (
            scalar(db, "SELECT status FROM journey_contacts WHERE id = :id", id=jc) == "COMPLETED"
        ),
        timeout=30,
    )
    wait_until(lambda: all_messages_sent(db), timeout=20)
    assert worker.proc.poll() is None
    assert victim not in worker.children()  # the pool replaced the child

    calls = webhook.snapshot()
    assert [c.key for c in calls] == [f"{jc}:0", f"{jc}:0"]
    executions = rows(
        db,
        "SELECT e.step_seq, n.type, e.status FROM journey_node_executions e "
        "JOIN journey_nodes n ON n.id = e.node_id WHERE e.journey_contact_id = :id "
        "ORDER BY e.step_seq",
        id=jc,
    )
    assert [tuple(e) for e in executions] == [
        (0, "webhook", "COMPLETED"),
        (1, "send_sms", "COMPLETED"),
    ]
    assert scalar(db, "SELECT count(*) FROM messages") == 1
    log = worker.log()
    assert log.count(f"journeys.execute_node[{task_id}] received") == 1
    assert re.search(r"dispatched \{[^}]*'late': 1\b", log)
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0


# --- 6. two workers, one database, one broker --------------------------------------------------


def test_two_workers_share_the_work_without_running_a_step_twice(
    redis_broker_url: str, producer, rig: Rig
) -> None:
    db = rig.db
    tenant = make_tenant(db)
    journey = make_journey(
        db,
        tenant,
        [
            ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "tag"),
            ("tag", "update_contact", {"set": {"stage": "greeted"}}, "bye"),
            ("bye", "send_sms", {"body": "Bye {{first_name}}"}, None),
        ],
    )
    contacts = make_contacts(db, tenant, 200)
    env = rig.env(redis_broker_url)
    w1 = rig.start(env, name="w1", beat=True)
    w2 = rig.start(env, name="w2")
    producer.publish(
        ENROLL,
        {
            "tenant_id": str(tenant),
            "journey_id": str(journey.journey_id),
            "contact_ids": [str(c) for c in contacts],
        },
    )
    wait_until(lambda: all_finished(db, journey.journey_id, 200), timeout=90, interval=0.5)
    assert journey_statuses(db, journey.journey_id) == {"COMPLETED": 200}
    wait_until(lambda: all_messages_sent(db), timeout=30, interval=0.5)
    assert scalar(db, "SELECT count(*) FROM messages") == 400
    assert_one_message_per_send(db)
    assert_one_execution_per_step(db)
    assert (
        scalar(
            db,
            "SELECT count(*) FROM contacts WHERE tenant_id = :t AND attributes->>'stage' = 'greeted'",
            t=tenant,
        )
        == 200
    )

    # Both workers took part; the database counts above are the proof of exactly once.
    per_worker = {w.log_path.stem: executed_in_batches(w.log()) for w in (w1, w2)}
    assert all(count > 0 for count in per_worker.values()), per_worker
    assert sum(per_worker.values()) == 600, per_worker
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0


# --- 7. graceful shutdown ----------------------------------------------------------------------


def test_sigterm_finishes_the_running_node_and_leaves_the_rest_queued(
    redis_broker_url: str, producer, rig: Rig
) -> None:
    db = rig.db
    hook = SlowWebhook(delay=2.0)
    try:
        tenant = make_tenant(db)
        journey = make_journey(
            db,
            tenant,
            [("call", "webhook", {"url": hook.url, "timeout_seconds": 10}, None)],
        )
        jcs = [make_journey_contact(db, journey, c) for c in make_contacts(db, tenant, 5)]
        env = rig.env(redis_broker_url)
        first = rig.start(env, name="w1", concurrency=1)
        for jc in jcs:
            producer.publish(
                EXECUTE_NODE,
                {
                    "tenant_id": str(tenant),
                    "journey_contact_id": str(jc),
                    "node_id": str(journey.nodes["call"]),
                },
            )
        running = hook.wait_for_calls(1, timeout=20)[0]
        started = time.monotonic()
        code = first.stop(signal.SIGTERM, timeout=20)
        stopped = time.monotonic()
        assert code == 0
        assert "Warm shutdown" in first.log()

        # The running node finished (and committed) before the process exited...
        running_jc = uuid.UUID(running.payload["journey_contact_id"])
        assert rows(
            db,
            "SELECT status FROM journey_node_executions WHERE journey_contact_id = :id",
            id=running_jc,
        ) == [("COMPLETED",)]
        assert (
            scalar(db, "SELECT status FROM journey_contacts WHERE id = :id", id=running_jc)
            == "COMPLETED"
        )
        assert stopped - started >= hook.delay - (started - running.at) - 0.2
        # ...and nothing else started: the rest are still in the broker.
        assert len(hook.snapshot()) == 1
        assert scalar(db, "SELECT count(*) FROM journey_node_executions") == 1
        broker = redis.Redis.from_url(redis_broker_url)
        assert broker.llen("journeys") == 4
        assert broker.hlen("unacked") == 0

        rig.start(env, name="w2", concurrency=2)
        wait_until(lambda: all_finished(db, journey.journey_id, 5), timeout=30)
        assert journey_statuses(db, journey.journey_id) == {"COMPLETED": 5}
        keys = Counter(c.key for c in hook.snapshot())
        assert keys == Counter({f"{jc}:0": 1 for jc in jcs})
        assert_one_execution_per_step(db)
        assert scalar(db, "SELECT count(*) FROM journey_node_executions") == 5
    finally:
        hook.close()


# --- 8. a flood of enrollments does not hold back journeys under way --------------------------


@pytest.mark.slow
def test_a_flood_of_enrollments_does_not_hold_back_journeys_under_way(
    redis_broker_url: str, producer, rig: Rig
) -> None:
    """Entry steps from journeys.enroll go to journeys.bulk; steps of journeys already under way
    stay on journeys. The worker takes from both in turn, so another tenant's journey finishes
    while the flood is still being worked through (on one queue it would wait behind it all)."""
    db = rig.db
    flood_tenant = make_tenant(db, name="Flood")
    flood = make_journey(
        db,
        flood_tenant,
        [
            ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "tag"),
            ("tag", "update_contact", {"set": {"seen": True}}, None),
        ],
    )
    flood_contacts = make_contacts(db, flood_tenant, 6000)
    other_tenant = make_tenant(db, name="Other")
    other = make_journey(
        db,
        other_tenant,
        [
            ("one", "update_contact", {"set": {"step": 1}}, "two"),
            ("two", "update_contact", {"set": {"step": 2}}, "three"),
            ("three", "update_contact", {"set": {"step": 3}}, None),
        ],
    )
    other_jc = make_journey_contact(db, other, make_contacts(db, other_tenant, 1)[0])

    worker = rig.start(rig.env(redis_broker_url, BATCH_SIZE="100"), name="w1", concurrency=1)
    for start in range(0, len(flood_contacts), 1000):
        producer.publish(
            ENROLL,
            {
                "tenant_id": str(flood_tenant),
                "journey_id": str(flood.journey_id),
                "contact_ids": [str(c) for c in flood_contacts[start : start + 1000]],
            },
        )
    broker = redis.Redis.from_url(redis_broker_url)
    # The enrollments have run: their entry batches wait in the broker.
    wait_until(lambda: broker.llen("journeys.bulk") >= 20, timeout=60, interval=0.05)
    producer.publish(
        EXECUTE_NODE,
        {
            "tenant_id": str(other_tenant),
            "journey_contact_id": str(other_jc),
            "node_id": str(other.nodes["one"]),
        },
    )
    wait_until(
        lambda: (
            scalar(db, "SELECT status FROM journey_contacts WHERE id = :id", id=other_jc)
            == "COMPLETED"
        ),
        timeout=60,
        interval=0.05,
    )
    flood_done = journey_statuses(db, flood.journey_id)["COMPLETED"]
    print(f"the other tenant's journey completed after {flood_done} of 6000 flood journeys")
    assert flood_done < 4000
    wait_until(lambda: all_finished(db, flood.journey_id, 6000), timeout=180)
    assert worker.proc.poll() is None


# --- 9. a tenant's webhook aimed at the platform's own network --------------------------------


def test_a_forbidden_webhook_fails_the_contact_once_and_the_worker_goes_on(
    redis_broker_url: str, producer, rig: Rig, tmp_path: Path
) -> None:
    """No allow-list, as in production: a tenant's webhook names a server on the worker's own
    machine (standing in for PostgreSQL, Redis or the metadata service). The worker refuses to
    connect: the contact fails once with the reason, nothing arrives, nothing is retried, the
    refusal is counted, and the worker takes the next message."""
    db = rig.db
    with http_stub() as internal:
        tenant = make_tenant(db)
        url = internal.url_for("/admin?token=s3cret-token")
        journey = make_journey(
            db,
            tenant,
            [
                ("call", "webhook", {"url": url, "timeout_seconds": 5}, "after"),
                ("after", "send_sms", {"body": "Hi {{first_name}}"}, None),
            ],
        )
        jc = make_journey_contact(db, journey, make_contacts(db, tenant, 1)[0])
        later = make_journey(db, tenant, ONE_SMS)
        later_contacts = make_contacts(db, tenant, 3)
        port = free_port()
        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        env = rig.env(
            redis_broker_url,
            WEBHOOK_ALLOWED_NETWORKS="",
            TASK_RETRY_BACKOFF_MAX_SECONDS="1",
            METRICS_PORT=str(port),
            METRICS_ADDRESS="127.0.0.1",
            PROMETHEUS_MULTIPROC_DIR=str(prom_dir),
        )
        worker = rig.start(env, concurrency=1)
        producer.publish(
            EXECUTE_NODE,
            {
                "tenant_id": str(tenant),
                "journey_contact_id": str(jc),
                "node_id": str(journey.nodes["call"]),
            },
        )
        wait_until(
            lambda: (
                scalar(db, "SELECT status FROM journey_contacts WHERE id = :id", id=jc) == "FAILED"
            ),
            timeout=30,
        )
        reason = "webhook_address_forbidden: 127.0.0.1"
        assert scalar(db, "SELECT status_reason FROM journey_contacts WHERE id = :id", id=jc) == (
            reason
        )
        assert rows(
            db,
            "SELECT n.type, e.status, e.error FROM journey_node_executions e "
            "JOIN journey_nodes n ON n.id = e.node_id WHERE e.journey_contact_id = :id",
            id=jc,
        ) == [("webhook", "FAILED", reason)]

        # The worker goes on: the next message is another tenant journey, which completes.
        producer.publish(
            ENROLL,
            {
                "tenant_id": str(tenant),
                "journey_id": str(later.journey_id),
                "contact_ids": [str(c) for c in later_contacts],
            },
        )
        wait_until(lambda: all_finished(db, later.journey_id, 3), timeout=30)
        assert journey_statuses(db, later.journey_id) == {"COMPLETED": 3}
        wait_until(
            lambda: total(scrape(port), "journey_worker_webhook_refusals_total") == 1, timeout=10
        )
        assert total(scrape(port), "journey_worker_webhook_refusals_total", range="loopback") == 1

        assert internal.requests == []  # nothing ever arrived
        assert worker.proc.poll() is None
        log = worker.log()
        failed = [line for line in log.splitlines() if "step failed " in line]
        assert len(failed) == 1 and f"journey_contact_id={jc}" in failed[0], failed
        assert reason in failed[0]
        assert "task retry" not in log  # a permanent failure: never retried
        assert "webhook refused: 127.0.0.1 resolves to 127.0.0.1 (loopback)" in log
        assert "s3cret" not in log  # neither the query string nor anything after it
        assert scalar(db, "SELECT count(*) FROM messages") == 3  # the later journey's only
        assert scalar(db, "SELECT count(*) FROM task_failures") == 0
