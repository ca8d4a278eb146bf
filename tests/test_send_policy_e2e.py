"""The send policy end to end, on Redis and on RabbitMQ, with real worker processes: 50
journeys send to one contact at once through two workers (four children) with a cap of 3 (exactly
3 messages go, the other 47 sends are SKIPPED `frequency_capped`, every journey goes on); and
sends deferred by quiet hours that beat's dispatcher runs again when the window ends."""

from __future__ import annotations

import json
import time
from datetime import UTC, timedelta

import pytest
from sqlalchemy import text

from tests.e2e_rig import (
    Rig,
    all_finished,
    assert_one_execution_per_step,
    assert_one_message_per_send,
    scalar,
)
from tests.factories import make_contacts, make_journey, make_journey_contact, make_tenant
from tests.worker_process import wait_until

pytestmark = pytest.mark.slow

SEND_THEN_MARK = [
    ("send", "send_sms", {"body": "Hi {{first_name}}"}, "mark"),
    ("mark", "update_contact", {"set": {"after": True}}, None),
]


def test_fifty_journeys_to_one_contact_send_exactly_the_cap(
    broker_url: str, producer, rig: Rig
) -> None:
    db = rig.db
    tenant = make_tenant(db)
    with db.begin() as conn:
        conn.execute(
            text("UPDATE tenants SET settings = CAST(:s AS jsonb) WHERE id = :t"),
            {"s": '{"frequency_cap": {"max_messages": 3, "per_seconds": 86400}}', "t": tenant},
        )
    [contact] = make_contacts(db, tenant, 1, attributes={"first_name": "Ann"})
    journeys = [make_journey(db, tenant, SEND_THEN_MARK) for _ in range(50)]
    steps = [(j, make_journey_contact(db, j, contact)) for j in journeys]
    env = rig.env(broker_url)
    rig.start(env, name="w1", beat=True)
    rig.start(env, name="w2")
    started = time.monotonic()
    for journey, jc in steps:
        producer.publish(
            "journeys.execute_node",
            {
                "tenant_id": str(tenant),
                "journey_contact_id": str(jc),
                "node_id": str(journey.nodes["send"]),
            },
        )
    wait_until(lambda: all(all_finished(db, j.journey_id, 1) for j, _jc in steps), timeout=120)
    print(f"50 journeys to one contact through two workers: {time.monotonic() - started:.2f} s")
    assert scalar(db, "SELECT count(*) FROM messages WHERE contact_id = :c", c=contact) == 3
    assert scalar(db, "SELECT count(*) FROM contact_sends WHERE contact_id = :c", c=contact) == 3
    assert (
        scalar(
            db,
            "SELECT count(*) FROM journey_node_executions"
            " WHERE status = 'SKIPPED' AND result->>'skipped' = 'frequency_capped'",
        )
        == 47
    )
    assert scalar(db, "SELECT count(*) FROM journey_contacts WHERE status = 'COMPLETED'") == 50
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0
    assert_one_execution_per_step(db)


def test_a_send_in_quiet_hours_waits_for_the_dispatcher_then_goes_once(
    broker_url: str, producer, rig: Rig
) -> None:
    """Real workers with beat's dispatcher: 20 sends inside the window wait at the send node;
    once the window is over (moved here, announced by tenant_updated) the dispatcher runs each
    step again and every contact gets its message exactly once."""
    db = rig.db
    tenant = make_tenant(db)
    with db.connect() as conn:
        now = conn.execute(text("SELECT now()")).scalar_one().astimezone(UTC)

    def set_window(start: timedelta, end: timedelta) -> None:
        window = {
            "start": (now + start).strftime("%H:%M"),
            "end": (now + end).strftime("%H:%M"),
        }
        with db.begin() as conn:
            conn.execute(
                text("UPDATE tenants SET settings = CAST(:s AS jsonb) WHERE id = :t"),
                {"s": json.dumps({"timezone": "UTC", "quiet_hours": window}), "t": tenant},
            )

    set_window(timedelta(hours=-1), timedelta(hours=2))
    journey = make_journey(db, tenant, SEND_THEN_MARK)
    contacts = make_contacts(db, tenant, 20, attributes={"first_name": "Ann"})
    env = rig.env(broker_url)
    rig.start(env, name="w1", beat=True)
    producer.publish(
        "journeys.enroll",
        {
            "tenant_id": str(tenant),
            "journey_id": str(journey.journey_id),
            "contact_ids": [str(c) for c in contacts],
        },
    )

    def waiting() -> int:
        return scalar(
            db,
            "SELECT count(*) FROM journey_contacts WHERE status = 'WAITING'"
            " AND current_node_id = :n AND due_at > now() + interval '1 hour'",
            n=journey.nodes["send"],
        )

    wait_until(lambda: waiting() == 20, timeout=60)
    assert scalar(db, "SELECT count(*) FROM messages") == 0
    time.sleep(2)  # several dispatcher runs: nothing is due, nothing moves
    assert waiting() == 20 and scalar(db, "SELECT count(*) FROM messages") == 0

    set_window(timedelta(hours=3), timedelta(hours=5))
    producer.publish("journeys.tenant_updated", {"tenant_id": str(tenant)})
    with db.begin() as conn:  # the window's end comes
        conn.execute(
            text("UPDATE journey_contacts SET due_at = now() WHERE journey_id = :j"),
            {"j": journey.journey_id},
        )
    wait_until(lambda: all_finished(db, journey.journey_id, 20), timeout=60)
    assert scalar(db, "SELECT count(*) FROM messages") == 20
    assert_one_message_per_send(db)
    assert_one_execution_per_step(db)
    assert (
        scalar(
            db,
            "SELECT count(*) FROM journey_node_executions WHERE result->>'deferred' = 'quiet_hours'",
        )
        == 20
    )
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0
