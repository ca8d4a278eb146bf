"""Two-way SMS end to end, on Redis and on RabbitMQ, with real worker processes: a STOP stops a
send already queued, receipts move statuses forward, and events race their waits' timeouts
across two workers with exactly one branch per contact."""

from __future__ import annotations

from sqlalchemy import Engine, text

from tasks.names import (
    CONTACT_EVENT,
    DELIVER_MESSAGES,
    DELIVERY_RECEIPT,
    ENROLL,
    EXECUTE_BATCH,
    INBOUND_MESSAGE,
)
from tests.e2e_rig import Rig, assert_one_execution_per_step, rows, scalar
from tests.engine_harness import deliveries, run_step
from tests.factories import make_contacts, make_journey, make_journey_contact, make_tenant
from tests.worker_process import wait_until

SEND = [("hello", "send_sms", {"body": "Hi {{first_name}}"}, None)]
CLICK = [
    (
        "wait",
        "wait_for_event",
        {
            "event": "link_clicked",
            "timeout_seconds": 3600,
            "matched_node_id": "@clicked",
            "timeout_node_id": "@nudge",
        },
        None,
    ),
    ("clicked", "send_sms", {"body": "Thanks"}, None),
    ("nudge", "send_sms", {"body": "Still there?"}, None),
]


def test_a_stop_stops_a_queued_send_and_receipts_apply(
    broker_url: str, producer, rig: Rig, pg_engine: Engine
) -> None:
    db = rig.db
    tenant = make_tenant(db)
    journey = make_journey(db, tenant, SEND)
    stopper, other = make_contacts(db, tenant, 2)
    queued = {}
    for contact in (stopper, other):
        jc = make_journey_contact(db, journey, contact)
        # The send step ran: its message is QUEUED, its delivery not yet published.
        [queued[contact]] = deliveries(run_step(tenant, jc, journey.nodes["hello"], 0))
    phone = scalar(db, "SELECT phone FROM contacts WHERE id = :c", c=stopper)
    # STOP first, then the deliveries it must stop: one worker, one process, in order.
    producer.publish(
        INBOUND_MESSAGE,
        {
            "tenant_id": str(tenant),
            "from_phone": phone,
            "to_phone": "+14155550100",
            "body": "Stop.",
            "provider_message_id": "inbound-1",
        },
    )
    for contact in (stopper, other):
        producer.publish(
            DELIVER_MESSAGES, {"tenant_id": str(tenant), "message_ids": [queued[contact]]}
        )
    # A receipt before its message is sent: kept, then applied when the id is stored.
    producer.publish(
        DELIVERY_RECEIPT,
        {
            "tenant_id": str(tenant),
            "provider_message_id": f"log-{queued[other]}",
            "status": "delivered",
        },
    )
    worker = rig.start(rig.env(broker_url), name="w1", concurrency=1)
    wait_until(
        lambda: scalar(db, "SELECT count(*) FROM messages WHERE status = 'QUEUED'") == 0,
        timeout=60,
    )
    stopped = rows(
        db, "SELECT status, error, sent_at FROM messages WHERE id = :m", m=queued[stopper]
    )
    assert [tuple(r) for r in stopped] == [("FAILED", "opted_out", None)]
    # Never handed to the (logging) provider; the other one was.
    assert f"logging provider) message_id={queued[stopper]}" not in worker.log()
    assert f"logging provider) message_id={queued[other]}" in worker.log()
    wait_until(
        lambda: (
            scalar(db, "SELECT status FROM messages WHERE id = :m", m=queued[other]) == "DELIVERED"
        ),
        timeout=30,
    )
    assert scalar(db, "SELECT opted_out_at IS NOT NULL FROM contacts WHERE id = :c", c=stopper)
    assert (
        scalar(db, "SELECT count(*) FROM contact_consent_changes WHERE contact_id = :c", c=stopper)
        == 1
    )
    # A receipt for the stopped message changes nothing: FAILED is terminal.
    producer.publish(
        DELIVERY_RECEIPT,
        {"tenant_id": str(tenant), "provider_message_id": "nope", "status": "failed"},
    )
    wait_until(lambda: "outcome=kept" in worker.log(), timeout=30)
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0
    assert worker.proc.poll() is None


def test_events_racing_timeouts_take_exactly_one_branch_per_contact(
    broker_url: str, producer, rig: Rig
) -> None:
    db = rig.db
    count = 60
    tenant = make_tenant(db)
    journey = make_journey(db, tenant, CLICK)
    contacts = make_contacts(db, tenant, count)
    env = rig.env(broker_url)
    rig.start(env, name="w1", beat=True)
    rig.start(env, name="w2")
    producer.publish(
        ENROLL,
        {
            "tenant_id": str(tenant),
            "journey_id": str(journey.journey_id),
            "contact_ids": [str(c) for c in contacts],
        },
    )
    wait_until(
        lambda: (
            scalar(db, "SELECT count(*) FROM journey_contacts WHERE status = 'WAITING'") == count
        ),
        timeout=60,
    )
    waits = rows(db, "SELECT id, contact_id, step_seq FROM journey_contacts")
    # The timeout is due now (the dispatcher will publish it too), and at the same moment each
    # contact's click arrives twice (one event_id) and once more under another id.
    # The clicks happened within the wait (after every entry, before the timeout), so both
    # branches are open to every contact and only the race decides: the timeout falls due in a
    # second, while the events are being handled (the dispatcher publishes it then, and our own
    # copies of the timeout's step arrive among the events).
    clicked_at = scalar(db, "SELECT max(executed_at) FROM journey_node_executions")
    with db.begin() as conn:
        conn.execute(text("UPDATE journey_contacts SET due_at = now() + interval '1 second'"))
    node = journey.nodes["wait"]
    for jc, contact, step in waits:
        producer.publish(
            EXECUTE_BATCH,
            {"tenant_id": str(tenant), "node_id": str(node), "journey_contacts": [[str(jc), step]]},
        )
        for event_id in (f"click-{contact}", f"click-{contact}", f"again-{contact}"):
            producer.publish(
                CONTACT_EVENT,
                {
                    "tenant_id": str(tenant),
                    "contact_id": str(contact),
                    "name": "link_clicked",
                    "event_id": event_id,
                    "occurred_at": clicked_at.isoformat(),
                },
            )
    wait_until(
        lambda: (
            scalar(db, "SELECT count(*) FROM journey_contacts WHERE status = 'COMPLETED'") == count
        ),
        timeout=90,
    )
    assert_one_execution_per_step(db)
    # Exactly one branch per contact: one resolution of the wait, one send.
    branches = rows(
        db,
        """
        SELECT jc.id,
               count(*) FILTER (WHERE e.result ? 'matched') AS resolved,
               count(m.id) AS sends
        FROM journey_contacts jc
        JOIN journey_node_executions e ON e.journey_contact_id = jc.id
        LEFT JOIN messages m ON m.journey_node_execution_id = e.id
        GROUP BY jc.id
        """,
    )
    assert len(branches) == count
    assert all((r.resolved, r.sends) == (1, 1) for r in branches), branches
    matched = scalar(
        db, "SELECT count(*) FROM journey_node_executions WHERE result->>'matched' = 'true'"
    )
    print(f"\n{count} contacts: {matched} took the event's branch, {count - matched} the timeout's")
    # Two events per contact (its redelivered copy applied once), whenever they were handled.
    wait_until(lambda: scalar(db, "SELECT count(*) FROM contact_events") == 2 * count, timeout=60)
    assert_one_execution_per_step(db)
    assert scalar(db, "SELECT count(*) FROM task_failures") == 0
    assert all(w.proc.poll() is None for w in rig.workers)
