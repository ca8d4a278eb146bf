"""The wait_for_event node and journeys.contact_event against real PostgreSQL: entering the
wait, the matched and timeout branches, events before the wait, where, event_id, and races
between an event, its copies and the timeout (exactly one branch wins)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from db import contact_events as events_db
from db.engine import transaction
from db.models import ContactEvent, JourneyContact
from tasks.contact_events import catch_up, contact_event, match_event
from tasks.errors import BadMessage, UnknownEntity
from tasks.inbound import InboundSms, handle_inbound
from tests.engine_harness import make_due, next_steps, run_step
from tests.factories import (
    JourneyFixture,
    make_contacts,
    make_journey,
    make_journey_contact,
    make_tenant,
)

CLICK = [
    (
        "wait",
        "wait_for_event",
        {
            "event": "link_clicked",
            "timeout_seconds": 3600,
            "matched_node_id": "@clicked",
            "timeout_node_id": "@nudge",
            "where": {"link": "offer"},
        },
        None,
    ),
    ("clicked", "send_sms", {"body": "Thanks for clicking"}, None),
    ("nudge", "send_sms", {"body": "Still interested?"}, None),
]


def waiting(engine: Engine, nodes: list = CLICK) -> tuple[JourneyFixture, uuid.UUID, uuid.UUID]:
    """A journey contact that has entered the wait: (journey, journey contact, contact)."""
    tenant = make_tenant(engine)
    journey = make_journey(engine, tenant, nodes)
    [contact] = make_contacts(engine, tenant, 1)
    jc = make_journey_contact(engine, journey, contact)
    entered = run_step(tenant, jc, journey.nodes["wait"], 0)
    assert (entered.outcome, entered.contact_status) == ("executed", "WAITING")
    assert next_steps(entered) == []
    return journey, jc, contact


def record(
    tenant: uuid.UUID,
    contact: uuid.UUID,
    name: str = "link_clicked",
    properties: dict[str, Any] | None = None,
    *,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> events_db.StoredEvent:
    with transaction() as session:
        return events_db.record_event(
            session,
            tenant_id=tenant,
            contact_id=contact,
            name=name,
            properties={"link": "offer"} if properties is None else properties,
            occurred_at=occurred_at,
            event_id=event_id,
        )


def state(engine: Engine, jc: uuid.UUID) -> tuple[str, uuid.UUID | None, int]:
    with engine.connect() as conn:
        row = conn.execute(
            select(
                JourneyContact.status, JourneyContact.current_node_id, JourneyContact.step_seq
            ).where(JourneyContact.id == jc)
        ).one()
    return row.status, row.current_node_id, row.step_seq


def wait_executions(engine: Engine, jc: uuid.UUID) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            r.result
            for r in conn.execute(
                text(
                    "SELECT result FROM journey_node_executions WHERE journey_contact_id = :jc "
                    "AND step_seq = 1"
                ),
                {"jc": jc},
            )
        ]


def test_entering_waits_at_the_node_until_the_timeout(pg_engine: Engine) -> None:
    journey, jc, _contact = waiting(pg_engine)
    status, node, step = state(pg_engine, jc)
    assert (status, node, step) == ("WAITING", journey.nodes["wait"], 1)
    with pg_engine.connect() as conn:
        due = conn.execute(
            text("SELECT due_at - now() FROM journey_contacts WHERE id = :jc"), {"jc": jc}
        ).scalar_one()
    assert timedelta(minutes=59) < due <= timedelta(hours=1)


def test_a_matching_event_takes_the_matched_branch(pg_engine: Engine) -> None:
    journey, jc, contact = waiting(pg_engine)
    event = record(journey.tenant_id, contact, properties={"link": "offer", "extra": 1})
    followups, claimed = match_event(journey.tenant_id, event)
    assert claimed == {jc}
    assert state(pg_engine, jc) == ("ACTIVE", journey.nodes["clicked"], 2)
    [step] = [s for f in followups for s in f.kwargs["journey_contacts"]]
    assert step == [str(jc), 2] and followups[0].kwargs["node_id"] == str(journey.nodes["clicked"])
    [result] = wait_executions(pg_engine, jc)
    assert result["matched"] is True and result["contact_event_id"] == str(event.id)
    # The matched node then runs as usual.
    sent = run_step(journey.tenant_id, jc, journey.nodes["clicked"], 2)
    assert sent.outcome == "executed"


@pytest.mark.parametrize(
    ("name", "properties", "why"),
    [
        ("page_viewed", {"link": "offer"}, "another event"),
        ("link_clicked", {"link": "other"}, "where differs"),
        ("link_clicked", {}, "where's property missing"),
    ],
)
def test_an_event_that_does_not_match_leaves_the_wait(
    pg_engine: Engine, name: str, properties: dict[str, Any], why: str
) -> None:
    journey, jc, contact = waiting(pg_engine)
    _followups, claimed = match_event(
        journey.tenant_id, record(journey.tenant_id, contact, name, properties)
    )
    assert claimed == set(), why
    assert state(pg_engine, jc)[0] == "WAITING"


def test_an_event_from_before_the_wait_does_not_match(pg_engine: Engine) -> None:
    journey, jc, contact = waiting(pg_engine)
    earlier = datetime.now().astimezone() - timedelta(minutes=5)
    event = record(journey.tenant_id, contact, occurred_at=earlier)
    assert match_event(journey.tenant_id, event)[1] == set()
    assert catch_up(journey.tenant_id, [jc])[1] == set()
    assert state(pg_engine, jc)[0] == "WAITING"


def test_an_event_after_the_timeout_moment_is_too_late(pg_engine: Engine) -> None:
    """The timeout's own step has not run yet, but the event happened after the wait ended."""
    journey, jc, contact = waiting(pg_engine)
    make_due(pg_engine, jc)
    assert match_event(journey.tenant_id, record(journey.tenant_id, contact))[1] == set()
    assert state(pg_engine, jc)[0] == "WAITING"


def test_the_timeout_takes_the_timeout_branch(pg_engine: Engine) -> None:
    journey, jc, contact = waiting(pg_engine)
    # Not due yet: the timeout's message is a no-op.
    assert run_step(journey.tenant_id, jc, journey.nodes["wait"], 1).outcome == "duplicate"
    make_due(pg_engine, jc)
    timed_out = run_step(journey.tenant_id, jc, journey.nodes["wait"], 1)
    assert timed_out.outcome == "executed"
    assert next_steps(timed_out) == [
        {"journey_contact_id": str(jc), "node_id": str(journey.nodes["nudge"]), "step": 2}
    ]
    [result] = wait_executions(pg_engine, jc)
    assert result["timed_out"] is True
    # An event after the timeout changes nothing.
    assert match_event(journey.tenant_id, record(journey.tenant_id, contact))[1] == set()
    assert state(pg_engine, jc) == ("ACTIVE", journey.nodes["nudge"], 2)


def test_null_branches_complete_the_journey(pg_engine: Engine) -> None:
    nodes = [("wait", "wait_for_event", {"event": "purchase", "timeout_seconds": 60}, None)]
    journey, jc, contact = waiting(pg_engine, nodes)
    match_event(journey.tenant_id, record(journey.tenant_id, contact, "purchase", {}))
    assert state(pg_engine, jc) == ("COMPLETED", None, 2)
    journey, jc, _contact = waiting(pg_engine, nodes)
    make_due(pg_engine, jc)
    run_step(journey.tenant_id, jc, journey.nodes["wait"], 1)
    assert state(pg_engine, jc) == ("COMPLETED", None, 2)


def test_a_bad_config_fails_the_contact_visibly(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    journey = make_journey(
        pg_engine, tenant, [("wait", "wait_for_event", {"event": "x", "timeout_seconds": 0}, None)]
    )
    [contact] = make_contacts(pg_engine, tenant, 1)
    jc = make_journey_contact(pg_engine, journey, contact)
    outcome = run_step(tenant, jc, journey.nodes["wait"], 0)
    assert outcome.outcome == "failed" and "timeout_seconds" in outcome.detail


def test_the_same_event_id_is_applied_once(pg_engine: Engine) -> None:
    journey, jc, contact = waiting(pg_engine)
    first = record(journey.tenant_id, contact, event_id="click-1")
    second = record(journey.tenant_id, contact, event_id="click-1", properties={"link": "x"})
    assert first.created and not second.created and second.id == first.id
    assert match_event(journey.tenant_id, first)[1] == {jc}
    assert match_event(journey.tenant_id, second)[1] == set()
    with pg_engine.connect() as conn:
        assert conn.execute(select(ContactEvent.id)).all() == [(first.id,)]


def test_catch_up_finds_an_event_recorded_while_the_contact_entered(pg_engine: Engine) -> None:
    journey, jc, contact = waiting(pg_engine)
    record(journey.tenant_id, contact)  # recorded, but its own lookup "ran too early"
    followups, claimed = catch_up(journey.tenant_id, [jc])
    assert claimed == {jc} and followups
    assert state(pg_engine, jc) == ("ACTIVE", journey.nodes["clicked"], 2)


def test_an_inbound_reply_is_the_sms_reply_event(pg_engine: Engine) -> None:
    nodes = [
        (
            "wait",
            "wait_for_event",
            {"event": "sms_reply", "timeout_seconds": 600, "matched_node_id": "@thanks"},
            None,
        ),
        ("thanks", "send_sms", {"body": "Got it"}, None),
    ]
    journey, jc, contact = waiting(pg_engine, nodes)
    with pg_engine.connect() as conn:
        phone = conn.execute(
            text("SELECT phone FROM contacts WHERE id = :c"), {"c": contact}
        ).scalar_one()
    outcome = handle_inbound(InboundSms(journey.tenant_id, phone, "+14155550100", "Maybe", "r1"))
    assert outcome.matched_waits == 1 and len(outcome.followups) == 1
    assert state(pg_engine, jc) == ("ACTIVE", journey.nodes["thanks"], 2)


def _race(actions: list[Any]) -> None:
    start = threading.Barrier(len(actions))
    errors: list[BaseException] = []

    def run(action: Any) -> None:
        start.wait()
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("round_", range(5))
def test_event_copies_and_the_timeout_at_the_same_instant_pick_one_branch(
    pg_engine: Engine, round_: int
) -> None:
    journey, jc, contact = waiting(pg_engine)
    events = [record(journey.tenant_id, contact, event_id=f"e{i}") for i in range(2)]
    # The clicks happened within the wait, and its timeout is due now too: both branches open.
    with pg_engine.begin() as conn:
        conn.execute(text("UPDATE journey_contacts SET due_at = now() WHERE id = :jc"), {"jc": jc})
    events.append(events[0])  # a redelivered copy
    _race(
        [lambda e=e: match_event(journey.tenant_id, e) for e in events]
        + [lambda: run_step(journey.tenant_id, jc, journey.nodes["wait"], 1)]
    )
    status, node, step = state(pg_engine, jc)
    assert status == "ACTIVE" and step == 2
    assert node in (journey.nodes["clicked"], journey.nodes["nudge"])
    [result] = wait_executions(pg_engine, jc)  # exactly one execution of the wait's step
    assert result.get("matched") is (node == journey.nodes["clicked"])
    print(f"race round {round_}: {'event' if result['matched'] else 'timeout'} won")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"contact_id": "nope", "name": "x"}, "not a UUID"),
        ({"contact_id": str(uuid.uuid4()), "name": ""}, "empty"),
        ({"contact_id": str(uuid.uuid4()), "name": "x", "properties": [1]}, "object"),
        ({"contact_id": str(uuid.uuid4()), "name": "x", "occurred_at": "now"}, "ISO.8601"),
        ({"contact_id": str(uuid.uuid4()), "name": "x", "event_id": 7}, "string"),
    ],
)
def test_bad_input_is_a_bad_message(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadMessage, match=problem):
        contact_event.run(tenant_id=str(uuid.uuid4()), **kwargs)


def test_another_tenants_contact_is_unknown(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    [contact] = make_contacts(pg_engine, make_tenant(pg_engine), 1)
    with pytest.raises(UnknownEntity):
        contact_event.run(tenant_id=str(tenant), contact_id=str(contact), name="x")


def test_the_embedded_sqlite_store_waits_matches_and_times_out(sqlite_engine: Engine) -> None:
    journey, jc, contact = waiting(sqlite_engine)
    assert match_event(journey.tenant_id, record(journey.tenant_id, contact))[1] == {jc}
    assert state(sqlite_engine, jc) == ("ACTIVE", journey.nodes["clicked"], 2)
    journey, jc, contact = waiting(sqlite_engine)
    make_due(sqlite_engine, jc)
    run_step(journey.tenant_id, jc, journey.nodes["wait"], 1)
    assert state(sqlite_engine, jc) == ("ACTIVE", journey.nodes["nudge"], 2)
