"""Batches end to end, on Redis and on RabbitMQ: real worker processes, redelivery, two workers
holding one batch, SIGKILL of a child and of the whole worker mid-batch, and the database
connection cut during the batch's write. Every case ends with one execution per step and one
message per send.

To act "mid-batch" the test holds a row lock on one journey contact of the batch: the worker's
read goes through (it locks nothing) and its write waits for the lock (it locks the batch's rows
in id order before claiming), so the test knows the batch is in flight, between its read and its
commit, for as long as it likes.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, text

from tests.e2e_rig import (
    Rig,
    all_finished,
    all_messages_sent,
    assert_one_execution_per_step,
    assert_one_message_per_send,
    executed_in_batches,
    journey_statuses,
    outcomes_in_batches,
    pid_with_local_port,
    rows,
    scalar,
)
from tests.engine_harness import make_due
from tests.factories import (
    JourneyFixture,
    make_contacts,
    make_journey,
    make_journey_contact,
    make_tenant,
)
from tests.worker_process import wait_until

pytestmark = pytest.mark.slow

ENROLL = "journeys.enroll"
EXECUTE_BATCH = "journeys.execute_batch"

# The blast journey of issue 9: send -> update -> condition -> send or exit.
BLAST = [
    ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "tag"),
    ("tag", "update_contact", {"set": {"greeted": True}}, "check"),
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
TWO_SENDS = [
    ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "bye"),
    ("bye", "send_sms", {"body": "Bye {{first_name}}"}, None),
]


@contextmanager
def row_locked(db: Engine, journey_contact_id: uuid.UUID) -> Iterator[int]:
    """Hold a row lock on one journey contact until the block ends (then roll back). Yields the
    holder's backend pid, so a test can tell the steps blocked by it from other brief waits
    (two dispatcher runs meeting on the lanes' row, say)."""
    with db.connect() as conn:
        holder = conn.execute(
            text("SELECT pg_backend_pid() FROM journey_contacts WHERE id = :id FOR UPDATE"),
            {"id": journey_contact_id},
        ).scalar_one()
        yield holder
        conn.rollback()


def worker_backends_waiting_on_locks(db: Engine, holder: int) -> list[tuple[int, int]]:
    """(backend pid, client port) of the worker's connections that wait, directly or behind
    another such connection, for the holder's lock."""
    waiting = {
        row.pid: (row.client_port, set(row.blockers))
        for row in rows(
            db,
            "SELECT pid, client_port, pg_blocking_pids(pid) AS blockers FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'journey-worker' "
            "AND wait_event_type = 'Lock'",
        )
    }
    behind = {holder}
    grew = True
    while grew:
        found = {pid for pid, (_, blockers) in waiting.items() if blockers & behind}
        grew = not found <= behind
        behind |= found
    return [(pid, port) for pid, (port, _) in waiting.items() if pid in behind]


def batch_kwargs(tenant_id: uuid.UUID, node_id: uuid.UUID, jcs: list[uuid.UUID]) -> dict:
    return {
        "tenant_id": str(tenant_id),
        "node_id": str(node_id),
        "journey_contacts": [[str(jc), 0] for jc in jcs],
    }


def enrolled_rows(db: Engine, count: int) -> tuple[uuid.UUID, JourneyFixture, list[uuid.UUID]]:
    """A two-send journey and `count` journey contacts at its entry, as enroll leaves them:
    due again (for the dispatcher) only after an hour's grace, which the test ends itself."""
    tenant = make_tenant(db)
    journey = make_journey(db, tenant, TWO_SENDS)
    jcs = [make_journey_contact(db, journey, c) for c in make_contacts(db, tenant, count)]
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE journey_contacts SET due_at = now() + interval '1 hour' WHERE id = ANY(:ids)"
            ),
            {"ids": jcs},
        )
    return tenant, journey, jcs


def finished_exactly_once(db: Engine, journey_id: uuid.UUID, count: int) -> None:
    wait_until(lambda: all_finished(db, journey_id, count), timeout=60)
    assert journey_statuses(db, journey_id) == {"COMPLETED": count}
    wait_until(lambda: all_messages_sent(db), timeout=30)
    assert scalar(db, "SELECT count(*) FROM messages") == 2 * count
    assert_one_message_per_send(db)
    assert_one_execution_per_step(db)


# Tests that act mid-batch wait on a row lock for a while: the worker's lock_timeout (10 s by
# default) must outlast it.
LONG_LOCKS = {"DB_LOCK_TIMEOUT_MS": "60000"}


def test_a_blast_runs_every_step_once_across_two_workers(
    broker_url: str, producer, rig: Rig
) -> None:
    """2,000 contacts, two workers: batches all the way, and the contacts that cannot be sent to
    (opted out, missing a placeholder) each get what they would get alone."""
    db = rig.db
    tenant = make_tenant(db)
    journey = make_journey(db, tenant, BLAST)
    pro = make_contacts(db, tenant, 1200, attributes={"first_name": "Ann", "plan": "pro"})
    basic = make_contacts(db, tenant, 797, attributes={"first_name": "Bob", "plan": "basic"})
    [opted_out] = make_contacts(db, tenant, 1, attributes={"first_name": "Oz", "plan": "pro"})
    [nameless] = make_contacts(db, tenant, 1, attributes={"plan": "pro"})
    [unknown_phone] = make_contacts(db, tenant, 1, phone=None)
    with db.begin() as conn:
        conn.execute(
            text("UPDATE contacts SET opted_out_at = now() WHERE id = :id"), {"id": opted_out}
        )
    everyone = [*pro, *basic, opted_out, nameless, unknown_phone]
    env = rig.env(broker_url)
    w1 = rig.start(env, name="w1", beat=True)
    w2 = rig.start(env, name="w2")
    for start in range(0, len(everyone), 1000):
        producer.publish(
            ENROLL,
            {
                "tenant_id": str(tenant),
                "journey_id": str(journey.journey_id),
                "contact_ids": [str(c) for c in everyone[start : start + 1000]],
            },
        )
    wait_until(lambda: all_finished(db, journey.journey_id, len(everyone)), timeout=120)
    statuses = journey_statuses(db, journey.journey_id)
    # Pro contacts complete (the opted-out and the phoneless one too, their sends SKIPPED),
    # basic ones exit, and the one missing a placeholder fails.
    assert statuses == {"COMPLETED": 1202, "EXITED": 797, "FAILED": 1}, statuses
    assert scalar(
        db,
        "SELECT status_reason FROM journey_contacts jc WHERE contact_id = :c",
        c=nameless,
    ) == ("missing_placeholder: first_name")
    wait_until(lambda: all_messages_sent(db), timeout=60)
    # Sends: 1,200 pro x 2 + 797 basic x 1; the opted-out and phoneless are SKIPPED.
    assert scalar(db, "SELECT count(*) FROM messages") == 1200 * 2 + 797
    assert (
        scalar(
            db,
            "SELECT count(*) FROM journey_node_executions WHERE status = 'SKIPPED'",
        )
        == 4  # the opted-out and the phoneless contact, at hello and at thanks
    )
    assert_one_message_per_send(db)
    assert_one_execution_per_step(db)
    assert scalar(db, "SELECT count(*) FROM contacts WHERE attributes->>'greeted' = 'true'") == 1999
    executed = scalar(db, "SELECT count(*) FROM journey_node_executions")
    said = outcomes_in_batches(w1.log()) + outcomes_in_batches(w2.log())
    # Every execution row is a step a batch line counted (the failed one's row says FAILED).
    assert said["executed"] + said["failed"] == executed, said
    assert said["failed"] == 1
    assert min(executed_in_batches(w.log()) for w in (w1, w2)) > 0
    # Batches, not one task per contact: the workers received a few dozen step tasks.
    received = sum(w.log().count(f"{EXECUTE_BATCH}[") for w in (w1, w2)) // 2
    assert received < executed / 50, received
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0
    assert w1.proc.poll() is None and w2.proc.poll() is None


def test_the_same_batch_held_by_two_workers_writes_each_step_once(
    broker_url: str, producer, rig: Rig
) -> None:
    db = rig.db
    tenant, journey, jcs = enrolled_rows(db, 50)
    env = rig.env(broker_url, **LONG_LOCKS)
    rig.start(env, name="w1", concurrency=1)
    rig.start(env, name="w2", concurrency=1)
    message = batch_kwargs(tenant, journey.nodes["hello"], jcs)
    with row_locked(db, jcs[25]) as holder:
        producer.publish(EXECUTE_BATCH, message)
        producer.publish(EXECUTE_BATCH, message)  # a duplicate, in flight at the same time
        # Both workers have read the batch and wait to write it.
        wait_until(lambda: len(worker_backends_waiting_on_locks(db, holder)) == 2, timeout=30)
    finished_exactly_once(db, journey.journey_id, 50)
    logs = [w.log() for w in rig.workers]
    # One worker executed the 50 first steps, the other found every one taken.
    first_steps = [log.count("size=50 duplicate=50") for log in logs]
    assert sorted(first_steps) == [0, 1], logs
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0


def test_a_child_killed_mid_batch_loses_nothing_and_doubles_nothing(
    broker_url: str, producer, rig: Rig
) -> None:
    """The child dies between its read and its commit. Its message was acknowledged
    (task_reject_on_worker_lost=False), so the dispatcher brings the steps back."""
    db = rig.db
    tenant, journey, jcs = enrolled_rows(db, 40)
    worker = rig.start(rig.env(broker_url, **LONG_LOCKS), name="w1", concurrency=2, beat=True)
    with row_locked(db, jcs[10]) as holder:
        producer.publish(EXECUTE_BATCH, batch_kwargs(tenant, journey.nodes["hello"], jcs))
        wait_until(lambda: len(worker_backends_waiting_on_locks(db, holder)) == 1, timeout=30)
        [(backend, port)] = worker_backends_waiting_on_locks(db, holder)
        victim = pid_with_local_port(worker.children(), port)
        assert victim is not None, "no worker child holds the waiting connection"
        os.kill(victim, signal.SIGKILL)
        worker.wait_for_log("WorkerLostError", timeout=15)
        # The server notices a dead client only when it next talks to it: end the orphaned
        # statement as it would, so nothing of the batch can commit after the child died.
        scalar(db, "SELECT pg_terminate_backend(:pid)", pid=backend)
    assert scalar(db, "SELECT count(*) FROM journey_node_executions") == 0
    make_due(db, *jcs)  # the grace period passes
    finished_exactly_once(db, journey.journey_id, 40)
    assert worker.proc.poll() is None
    # Steps whose grace ran out come back as late steps.
    assert re.search(r"dispatched \{[^}]*'late': 40", worker.log())


def test_the_whole_worker_killed_mid_batch_loses_nothing_and_doubles_nothing(
    broker_url: str, producer, rig: Rig
) -> None:
    """RabbitMQ redelivers the unacknowledged batch when the connection drops; on Redis the
    message waits for its visibility timeout, and the dispatcher re-publishes the steps first."""
    db = rig.db
    on_redis = broker_url.startswith("redis")
    tenant, journey, jcs = enrolled_rows(db, 40)
    env = rig.env(broker_url, BROKER_VISIBILITY_TIMEOUT_SECONDS="60", **LONG_LOCKS)
    # On RabbitMQ no dispatcher runs at all: only the broker can bring the batch back.
    first = rig.start(env, name="w1", concurrency=2, beat=on_redis)
    with row_locked(db, jcs[10]) as holder:
        task_id = producer.publish(EXECUTE_BATCH, batch_kwargs(tenant, journey.nodes["hello"], jcs))
        wait_until(lambda: len(worker_backends_waiting_on_locks(db, holder)) == 1, timeout=30)
        [(backend, _port)] = worker_backends_waiting_on_locks(db, holder)
        first.kill_all()
        scalar(db, "SELECT pg_terminate_backend(:pid)", pid=backend)
    assert scalar(db, "SELECT count(*) FROM journey_node_executions") == 0
    if on_redis:
        make_due(db, *jcs)  # the grace period passes
    second = rig.start(env, name="w2", concurrency=2, beat=on_redis)
    finished_exactly_once(db, journey.journey_id, 40)
    redelivered = f"{EXECUTE_BATCH}[{task_id}] received" in second.log()
    # RabbitMQ hands the very same message to the new worker; on Redis it is still parked.
    assert redelivered is not on_redis


def test_the_database_connection_cut_during_the_batch_write_is_retried_once(
    broker_url: str, producer, rig: Rig
) -> None:
    db = rig.db
    tenant, journey, jcs = enrolled_rows(db, 40)
    worker = rig.start(
        rig.env(broker_url, TASK_RETRY_BACKOFF_MAX_SECONDS="1", **LONG_LOCKS),
        name="w1",
        concurrency=1,
    )
    with row_locked(db, jcs[10]) as holder:
        producer.publish(EXECUTE_BATCH, batch_kwargs(tenant, journey.nodes["hello"], jcs))
        wait_until(lambda: len(worker_backends_waiting_on_locks(db, holder)) == 1, timeout=30)
        [(backend, _port)] = worker_backends_waiting_on_locks(db, holder)
        scalar(db, "SELECT pg_terminate_backend(:pid)", pid=backend)
        worker.wait_for_log("task retry task=journeys.execute_batch", timeout=15)
    finished_exactly_once(db, journey.journey_id, 40)
    assert "OperationalError" in worker.log()
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0
