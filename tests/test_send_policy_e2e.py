"""The frequency cap end to end, on Redis and on RabbitMQ: 50 journeys send to one contact at
once through two real worker processes (four children); with a cap of 3, exactly 3 messages
go, the other 47 sends are SKIPPED `frequency_capped` and every journey goes on."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from tests.e2e_rig import Rig, all_finished, assert_one_execution_per_step, scalar
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
