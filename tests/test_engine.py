"""The engine on both step stores (PostgreSQL and the embedded SQLite): exactly-once effects for
one contact and for batches. Tests that need PostgreSQL itself (a killed backend, SKIP LOCKED
between dispatchers) take `pg_engine`; everything else takes `store_engine` and runs twice."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.exc import OperationalError

from db import dispatch, enrollment, holds
from db import engine as db_engine
from db.clock import as_utc, seconds_from_now
from db.engine import transaction
from db.instrumentation import StatementCounter
from db.models import (
    Contact,
    Journey,
    JourneyContact,
    JourneyNode,
    JourneyNodeExecution,
    Message,
    Tenant,
)
from db.postgres_step_store import PostgresStepStore
from db.settings import DbSettings
from tasks import names
from tasks.errors import UnknownEntity
from tasks.settings import EngineSettings
from tests.engine_harness import (
    deliveries,
    make_due,
    next_steps,
    row_counts,
    run_batch,
    run_step,
    walk,
)
from tests.factories import (
    JourneyFixture,
    make_contacts,
    make_journey,
    make_journey_contact,
    make_tenant,
)
from tests.locks import wait_for_lock_waiter
from tests.threads import run_in_threads

SIMPLE = [
    ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "check"),
    (
        "check",
        "condition",
        {
            "field": "plan",
            "op": "eq",
            "value": "pro",
            "true_node_id": "@upgrade",
            "false_node_id": "@bye",
        },
        None,
    ),
    ("upgrade", "update_contact", {"set": {"stage": "upsold"}}, "thanks"),
    ("thanks", "send_sms", {"body": "Thanks {{first_name}}"}, None),
    ("bye", "exit", {}, None),
]


@pytest.fixture
def journey(store_engine: Engine) -> JourneyFixture:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, SIMPLE)
    fixture.contacts = make_contacts(store_engine, tenant_id, 3)
    return fixture


def entry(journey: JourneyFixture) -> uuid.UUID:
    return journey.nodes["hello"]


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def both_read_before_either_writes(engine: Engine, parties: int) -> Iterator[None]:
    """Force the race: every worker loads its steps before any of them writes. On PostgreSQL a
    barrier after the read does it. On SQLite the second worker cannot read before the first
    commits (BEGIN IMMEDIATE holds the write lock from the start), so there is no race to force:
    the second reads the step as taken, which the same assertions check."""
    if not is_postgresql(engine):
        yield
        return
    barrier = threading.Barrier(parties, timeout=20)
    real_load = PostgresStepStore.load

    def load_then_wait(store, *args, **kwargs):
        loaded = real_load(store, *args, **kwargs)
        barrier.wait()
        return loaded

    PostgresStepStore.load = load_then_wait  # type: ignore[method-assign]
    try:
        yield
    finally:
        PostgresStepStore.load = real_load  # type: ignore[method-assign]


# --- one contact --------------------------------------------------------------------------


def test_journey_walks_to_completion_with_one_row_per_step(store_engine, journey) -> None:
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    outcomes = walk(journey.tenant_id, jc, entry(journey))
    assert [o.node_type for o in outcomes] == [
        "send_sms",
        "condition",
        "update_contact",
        "send_sms",
    ]
    counts = row_counts(store_engine, jc)
    assert counts | {"due_at": None} == {
        "status": "COMPLETED",
        "reason": None,
        "step": 4,
        "executions": 4,
        "messages": 2,
        "due_at": None,
        "current_node_id": None,
    }
    with store_engine.connect() as conn:
        bodies = conn.execute(select(Message.body)).scalars().all()
        attributes = conn.execute(
            select(Contact.attributes).where(Contact.id == journey.contacts[0])
        ).scalar()
    assert sorted(bodies) == ["Hi Ann0", "Thanks Ann0"]
    assert attributes["stage"] == "upsold" and attributes["plan"] == "pro"


def test_same_message_delivered_twice_runs_once(store_engine, journey) -> None:
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    first = run_step(journey.tenant_id, jc, entry(journey), 0)
    again = run_step(journey.tenant_id, jc, entry(journey), 0)
    assert first.outcome == "executed" and len(next_steps(first)) == 1
    assert len(deliveries(first)) == 1
    assert again.outcome == "duplicate" and again.followups == []
    counts = row_counts(store_engine, jc)
    assert (counts["executions"], counts["messages"], counts["step"]) == (1, 1, 1)


def test_upstream_row_without_step_is_the_first_step_exactly_once(store_engine, journey) -> None:
    # Upstream inserted the journey contact and publishes execute_node with no step.
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    first = run_step(journey.tenant_id, jc, entry(journey), None)
    again = run_step(journey.tenant_id, jc, entry(journey), None)
    assert (first.outcome, again.outcome) == ("executed", "duplicate")
    assert row_counts(store_engine, jc)["messages"] == 1


def test_upstream_pending_execution_row_is_completed_not_duplicated(store_engine, journey) -> None:
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    pending_id = uuid.uuid4()
    with store_engine.begin() as conn:
        conn.execute(
            insert(JourneyNodeExecution).values(
                id=pending_id,
                tenant_id=journey.tenant_id,
                journey_contact_id=jc,
                node_id=entry(journey),
                status="PENDING",
            )
        )
    run_step(journey.tenant_id, jc, entry(journey))
    with store_engine.connect() as conn:
        rows = conn.execute(
            select(
                JourneyNodeExecution.id, JourneyNodeExecution.status, JourneyNodeExecution.step_seq
            )
        ).all()
        message_execution = conn.execute(select(Message.journey_node_execution_id)).scalar_one()
    assert rows == [(pending_id, "COMPLETED", 0)]
    assert message_execution == pending_id


def test_two_workers_with_the_same_message_one_wins(store_engine, journey) -> None:
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    with both_read_before_either_writes(store_engine, 2):
        outcomes = run_in_threads(
            lambda: run_step(journey.tenant_id, jc, entry(journey), 0),
            lambda: run_step(journey.tenant_id, jc, entry(journey), 0),
        )
    assert sorted(o.outcome for o in outcomes) == ["duplicate", "executed"]
    assert sum(len(next_steps(o)) for o in outcomes) == 1
    assert sum(len(deliveries(o)) for o in outcomes) == 1
    counts = row_counts(store_engine, jc)
    assert (counts["executions"], counts["messages"]) == (1, 1)


def test_database_failing_during_the_write_leaves_nothing_then_the_retry_sends_once(
    pg_engine, monkeypatch
) -> None:
    tenant_id = make_tenant(pg_engine)
    journey = make_journey(pg_engine, tenant_id, SIMPLE)
    jc = make_journey_contact(pg_engine, journey, make_contacts(pg_engine, tenant_id, 1)[0])
    real_write = PostgresStepStore.write
    calls = {"n": 0}

    def lose_the_database_first(store, tenant, writes):
        calls["n"] += 1
        if calls["n"] == 1:
            # The server drops this very connection as the step is being written.
            store.connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return real_write(store, tenant, writes)

    monkeypatch.setattr(PostgresStepStore, "write", lose_the_database_first)
    with pytest.raises(OperationalError):
        run_step(tenant_id, jc, journey.nodes["hello"], 0)
    counts = row_counts(pg_engine, jc)
    assert (counts["executions"], counts["messages"], counts["step"]) == (0, 0, 0)
    retried = run_step(tenant_id, jc, journey.nodes["hello"], 0)  # what Celery's retry does
    assert retried.outcome == "executed" and len(next_steps(retried)) == 1
    counts = row_counts(pg_engine, jc)
    assert (counts["executions"], counts["messages"], counts["step"]) == (1, 1, 1)


def test_database_failing_after_the_send_was_recorded_never_sends_twice(
    pg_engine, monkeypatch
) -> None:
    """The write committed (the message is recorded), then the task died before publishing:
    the redelivered message is a duplicate, and the next step is still scheduled exactly once
    (its row is due; the dispatcher publishes it after the grace period)."""
    tenant_id = make_tenant(pg_engine)
    journey = make_journey(pg_engine, tenant_id, SIMPLE)
    jc = make_journey_contact(pg_engine, journey, make_contacts(pg_engine, tenant_id, 1)[0])
    real_write = PostgresStepStore.write

    def write_then_lose_the_database(store, tenant, writes):
        claimed = real_write(store, tenant, writes)
        store.connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return claimed

    monkeypatch.setattr(PostgresStepStore, "write", write_then_lose_the_database)
    with pytest.raises(OperationalError):
        run_step(tenant_id, jc, journey.nodes["hello"], 0)
    monkeypatch.undo()
    again = run_step(tenant_id, jc, journey.nodes["hello"], 0)
    assert again.outcome == "duplicate" and again.followups == []
    counts = row_counts(pg_engine, jc)
    assert (counts["executions"], counts["messages"], counts["step"], counts["status"]) == (
        1,
        1,
        1,
        "ACTIVE",
    )
    make_due(pg_engine, jc)  # the grace period passes
    with transaction() as session:
        due = dispatch.claim_late_steps(session, limit=10, grace_seconds=300)
    assert [(d.node_id, d.step_seq) for d in due] == [(journey.nodes["check"], 1)]


def test_unknown_and_foreign_journey_contacts_are_the_same_error(store_engine, journey) -> None:
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    other_tenant = make_tenant(store_engine, name="Other")
    with pytest.raises(UnknownEntity, match="unknown_journey_contact"):
        run_step(journey.tenant_id, uuid.uuid4(), entry(journey))
    with pytest.raises(UnknownEntity, match="unknown_journey_contact"):
        run_step(other_tenant, jc, entry(journey))
    assert row_counts(store_engine, jc)["executions"] == 0


def opt_out(engine: Engine, contact_id: uuid.UUID) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Contact)
            .where(Contact.id == contact_id)
            .values(opted_out_at=seconds_from_now(-1))
        )


def test_opted_out_contact_is_skipped_and_the_journey_goes_on(store_engine, journey) -> None:
    opt_out(store_engine, journey.contacts[0])
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    outcomes = walk(journey.tenant_id, jc, entry(journey))
    assert outcomes[0].execution_status == "SKIPPED"
    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["messages"], counts["executions"]) == ("COMPLETED", 0, 4)


def test_missing_placeholder_fails_the_contact_visibly(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(
        store_engine, tenant_id, [("hello", "send_sms", {"body": "Hi {{nickname}}"}, None)]
    )
    contact = make_contacts(store_engine, tenant_id, 1)[0]
    jc = make_journey_contact(store_engine, fixture, contact)
    outcome = run_step(tenant_id, jc, fixture.nodes["hello"])
    assert outcome.outcome == "failed"
    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["reason"], counts["messages"]) == (
        "FAILED",
        "missing_placeholder: nickname",
        0,
    )
    with store_engine.connect() as conn:
        assert conn.execute(
            select(JourneyNodeExecution.status, JourneyNodeExecution.error)
        ).one() == ("FAILED", "missing_placeholder: nickname")


@pytest.mark.parametrize(
    ("node_type", "config", "reason"),
    [
        ("wait", {"seconds": "soon"}, "invalid_node_config: wait seconds"),
        ("teleport", {}, "invalid_node_config: unknown node type 'teleport'"),
    ],
)
def test_invalid_node_config_fails_the_contact_with_the_reason(
    store_engine, node_type, config, reason
) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, [("bad", node_type, config, None)])
    jc = make_journey_contact(store_engine, fixture, make_contacts(store_engine, tenant_id, 1)[0])
    outcome = run_step(tenant_id, jc, fixture.nodes["bad"])
    counts = row_counts(store_engine, jc)
    assert outcome.outcome == "failed" and counts["status"] == "FAILED"
    assert counts["reason"].startswith(reason)


LOOP = [
    ("touch", "update_contact", {"set": {"touched": True}}, "pause"),
    ("pause", "wait", {"seconds": 0}, "touch"),
]


def test_loop_guard_fails_a_fast_loop(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, LOOP)
    jc = make_journey_contact(store_engine, fixture, make_contacts(store_engine, tenant_id, 1)[0])
    outcomes = walk(tenant_id, jc, fixture.nodes["touch"])
    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["reason"]) == ("FAILED", "loop_detected")
    # Three runs of 'touch' are allowed within the window; the fourth is the loop.
    touched = [o for o in outcomes if o.node_type == "update_contact" and o.outcome == "executed"]
    assert len(touched) == 3


def test_loop_guard_uses_its_narrow_query_once_history_is_long(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, LOOP)
    jc = make_journey_contact(store_engine, fixture, make_contacts(store_engine, tenant_id, 1)[0])
    # Twelve old, legitimate runs push the history past the recent-executions window.
    with store_engine.begin() as conn:
        for step in range(12):
            node = fixture.nodes["touch" if step % 2 == 0 else "pause"]
            days_ago = seconds_from_now(-(30 - step) * 86400)
            conn.execute(
                insert(JourneyNodeExecution).values(
                    id=uuid.uuid4(),
                    tenant_id=tenant_id,
                    journey_contact_id=jc,
                    node_id=node,
                    status="COMPLETED",
                    step_seq=step,
                    executed_at=days_ago,
                    created_at=days_ago,
                )
            )
        conn.execute(update(JourneyContact).where(JourneyContact.id == jc).values(step_seq=12))
    outcomes = walk(tenant_id, jc, fixture.nodes["touch"], 12)
    assert row_counts(store_engine, jc)["reason"] == "loop_detected"
    assert len([o for o in outcomes if o.node_type == "update_contact"]) == 4


def shift_history(engine: Engine, jc: uuid.UUID, by: timedelta) -> None:
    """Move a journey contact's history and wake time by `by` (time passing)."""
    with engine.begin() as conn:
        for id_, executed, created in conn.execute(
            select(
                JourneyNodeExecution.id,
                JourneyNodeExecution.executed_at,
                JourneyNodeExecution.created_at,
            ).where(JourneyNodeExecution.journey_contact_id == jc)
        ).all():
            conn.execute(
                update(JourneyNodeExecution)
                .where(JourneyNodeExecution.id == id_)
                .values(executed_at=as_utc(executed) + by, created_at=as_utc(created) + by)
            )
        due = conn.execute(select(JourneyContact.due_at).where(JourneyContact.id == jc)).scalar()
        conn.execute(
            update(JourneyContact).where(JourneyContact.id == jc).values(due_at=as_utc(due) + by)
        )


def test_a_weekly_loop_through_a_wait_keeps_working(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(
        store_engine,
        tenant_id,
        [
            ("remind", "send_sms", {"body": "Weekly reminder"}, "week"),
            ("week", "wait", {"seconds": 7 * 24 * 3600}, "remind"),
        ],
    )
    jc = make_journey_contact(store_engine, fixture, make_contacts(store_engine, tenant_id, 1)[0])
    node, step = fixture.nodes["remind"], 0
    for _week in range(6):
        walk(tenant_id, jc, node, step)
        counts = row_counts(store_engine, jc)
        assert counts["status"] == "WAITING", counts
        shift_history(store_engine, jc, timedelta(days=-7))  # a week passes
        node, step = counts["current_node_id"], counts["step"]
    assert row_counts(store_engine, jc)["messages"] == 6


def test_step_cap_stops_what_the_loop_guard_misses(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, LOOP)
    jc = make_journey_contact(store_engine, fixture, make_contacts(store_engine, tenant_id, 1)[0])
    settings = EngineSettings(loop_repeats=1000, max_steps=7)
    walk(tenant_id, jc, fixture.nodes["touch"], settings=settings)
    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["reason"], counts["executions"]) == (
        "FAILED",
        "step_limit_exceeded",
        7,
    )


def test_suspended_tenant_holds_contacts_and_resume_continues_them(store_engine, journey) -> None:
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    with store_engine.begin() as conn:
        conn.execute(
            update(Tenant).where(Tenant.id == journey.tenant_id).values(status="SUSPENDED")
        )
    held = run_step(journey.tenant_id, jc, entry(journey))
    assert held.outcome == "held"
    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["reason"], counts["messages"], counts["step"]) == (
        "PAUSED",
        "tenant_suspended",
        0,
        0,
    )
    # Resuming: the tenant is ACTIVE again and tenant_updated releases its held contacts.
    with store_engine.begin() as conn:
        conn.execute(update(Tenant).where(Tenant.id == journey.tenant_id).values(status="ACTIVE"))
    with transaction() as session:
        resumed = holds.resume_held_contacts(
            session, journey.tenant_id, reasons=["tenant_suspended"]
        )
        assert resumed == 1
        due = dispatch.claim_scheduled_steps(session, per_tenant=10, limit=10, grace_seconds=300)
    assert [(d.journey_contact_id, d.node_id, d.step_seq) for d in due] == [(jc, entry(journey), 0)]
    walk(journey.tenant_id, jc, entry(journey), 0)
    assert row_counts(store_engine, jc)["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("status", "contact_status", "reason"),
    [
        ("PAUSED", "PAUSED", "journey_paused"),
        ("DRAFT", "PAUSED", "journey_draft"),
        ("ARCHIVED", "EXITED", "journey_archived"),
    ],
)
def test_journey_not_active_sends_nothing(
    store_engine, journey, status, contact_status, reason
) -> None:
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    with store_engine.begin() as conn:
        conn.execute(update(Journey).where(Journey.id == journey.journey_id).values(status=status))
    run_step(journey.tenant_id, jc, entry(journey))
    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["reason"], counts["messages"]) == (contact_status, reason, 0)


def test_last_node_deleted_while_contacts_wait_ends_their_journey_visibly(store_engine) -> None:
    """The wait now ends the journey (its next_node_id went null with the delete): contacts
    waiting for the deleted node complete, saying why (tests/test_journey_edits.py has more)."""
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(
        store_engine,
        tenant_id,
        [
            ("pause", "wait", {"seconds": 3600}, "after"),
            ("after", "send_sms", {"body": "later"}, None),
        ],
    )
    jc = make_journey_contact(store_engine, fixture, make_contacts(store_engine, tenant_id, 1)[0])
    run_step(tenant_id, jc, fixture.nodes["pause"])
    assert row_counts(store_engine, jc)["status"] == "WAITING"
    with store_engine.begin() as conn:
        conn.execute(delete(JourneyNode).where(JourneyNode.id == fixture.nodes["after"]))
    make_due(store_engine, jc)
    with transaction() as session:
        due = dispatch.claim_scheduled_steps(session, per_tenant=10, limit=10, grace_seconds=300)
    assert len(due) == 1
    outcome = run_step(tenant_id, jc, due[0].node_id, due[0].step_seq)
    counts = row_counts(store_engine, jc)
    assert (outcome.outcome, outcome.detail) == ("executed", "node_removed")
    assert (counts["status"], counts["reason"], counts["messages"]) == (
        "COMPLETED",
        "node_removed",
        0,
    )


def test_wait_is_stored_in_the_database_and_dispatched_once_when_due(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(
        store_engine,
        tenant_id,
        [
            ("pause", "wait", {"seconds": 3600}, "after"),
            ("after", "send_sms", {"body": "an hour later"}, None),
        ],
    )
    jc = make_journey_contact(store_engine, fixture, make_contacts(store_engine, tenant_id, 1)[0])
    outcome = run_step(tenant_id, jc, fixture.nodes["pause"])
    assert outcome.followups == []  # nothing goes to the broker for a wait
    counts = row_counts(store_engine, jc)
    assert counts["status"] == "WAITING" and counts["current_node_id"] == fixture.nodes["after"]
    # An early message for the next step (a stray duplicate) must not cut the wait short.
    assert run_step(tenant_id, jc, fixture.nodes["after"], 1).outcome == "duplicate"
    with transaction() as session:
        assert (
            dispatch.claim_scheduled_steps(session, per_tenant=10, limit=10, grace_seconds=300)
            == []
        )
    make_due(store_engine, jc)
    with transaction() as session:
        due = dispatch.claim_scheduled_steps(session, per_tenant=10, limit=10, grace_seconds=300)
    with transaction() as session:
        assert (
            dispatch.claim_scheduled_steps(session, per_tenant=10, limit=10, grace_seconds=300)
            == []
        )
    assert [(d.node_id, d.step_seq) for d in due] == [(fixture.nodes["after"], 1)]
    walk(tenant_id, jc, due[0].node_id, due[0].step_seq)
    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["messages"], counts["executions"]) == ("COMPLETED", 1, 2)


def test_wait_until_with_an_offset_wakes_at_that_instant(store_engine) -> None:
    """`until` with a non-UTC offset is the same instant on both stores (SQLite keeps the wall
    clock it is given, so the time is normalised to UTC when the config is parsed)."""
    tenant_id = make_tenant(store_engine)
    until = datetime.now(UTC) + timedelta(days=2)
    in_tokyo = until.astimezone(ZoneInfo("Asia/Tokyo")).replace(microsecond=0)
    fixture = make_journey(
        store_engine,
        tenant_id,
        [
            ("pause", "wait", {"until": in_tokyo.isoformat()}, "after"),
            ("after", "send_sms", {"body": "later"}, None),
        ],
    )
    jc = make_journey_contact(store_engine, fixture, make_contacts(store_engine, tenant_id, 1)[0])
    run_step(tenant_id, jc, fixture.nodes["pause"])
    stored = as_utc(row_counts(store_engine, jc)["due_at"])
    assert stored == in_tokyo.astimezone(UTC), (stored, in_tokyo)


def test_lost_enqueue_is_recovered_by_the_dispatcher(store_engine, journey) -> None:
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    settings = EngineSettings(redispatch_grace_seconds=60)
    first = run_step(journey.tenant_id, jc, entry(journey), 0, settings=settings)
    # The process died after commit: the followup was never published.
    lost = next_steps(first)[0]
    with transaction() as session:
        assert dispatch.claim_late_steps(session, limit=10, grace_seconds=60) == []
    make_due(store_engine, jc)  # the grace period passes
    with transaction() as session:
        due = dispatch.claim_late_steps(session, limit=10, grace_seconds=60)
    assert [(str(d.node_id), d.step_seq, d.redispatch_count) for d in due] == [
        (lost["node_id"], lost["step"], 1)
    ]
    walk(journey.tenant_id, jc, due[0].node_id, due[0].step_seq)
    # And the original message, if it turns up after all, is a duplicate.
    assert (
        run_step(journey.tenant_id, jc, uuid.UUID(lost["node_id"]), lost["step"]).outcome
        == "duplicate"
    )
    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["executions"], counts["messages"]) == ("COMPLETED", 4, 2)


def test_two_dispatchers_never_claim_the_same_row(pg_engine) -> None:
    tenant_id = make_tenant(pg_engine)
    journey = make_journey(pg_engine, tenant_id, SIMPLE)
    for contact in make_contacts(pg_engine, tenant_id, 300):
        make_journey_contact(pg_engine, journey, contact)
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE journey_contacts SET status = 'WAITING', due_at = now() - interval '1 second'"
            )
        )
    claimed: list[list[uuid.UUID]] = [[], []]
    barrier = threading.Barrier(2, timeout=20)

    def dispatcher(index: int) -> None:
        barrier.wait()
        while True:
            with transaction() as session:
                batch = dispatch.claim_scheduled_steps(
                    session, per_tenant=25, limit=25, grace_seconds=300
                )
            if not batch:
                return
            claimed[index].extend(d.journey_contact_id for d in batch)

    run_in_threads(lambda: dispatcher(0), lambda: dispatcher(1))
    everything = claimed[0] + claimed[1]
    assert len(everything) == len(set(everything)) == 300


def test_enroll_is_idempotent_and_ignores_foreign_contacts(store_engine, journey) -> None:
    other_tenant = make_tenant(store_engine, name="Other")
    foreign = make_contacts(store_engine, other_tenant, 2)
    ids = journey.contacts + foreign + [uuid.uuid4()]

    def enroll() -> list[uuid.UUID]:
        with transaction() as session:
            return enrollment.enroll_contacts(
                session,
                tenant_id=journey.tenant_id,
                journey_id=journey.journey_id,
                entry_node_id=entry(journey),
                contact_ids=ids,
                grace_seconds=300,
            )

    created, again = enroll(), enroll()
    assert len(created) == 3 and again == []
    with store_engine.connect() as conn:
        rows = conn.execute(
            select(JourneyContact.contact_id, JourneyContact.status, JourneyContact.step_seq)
        ).all()
    assert sorted(rows) == sorted((c, "ACTIVE", 0) for c in journey.contacts)


def test_each_redispatch_is_counted_and_rearmed(store_engine, journey) -> None:
    jc = make_journey_contact(store_engine, journey, journey.contacts[0])
    for _ in range(3):
        make_due(store_engine, jc)
        with transaction() as session:
            due = dispatch.claim_late_steps(session, limit=10, grace_seconds=60)
    assert due[0].redispatch_count == 3
    # Re-armed: not claimed again until another grace period passes.
    with transaction() as session:
        assert dispatch.claim_late_steps(session, limit=10, grace_seconds=60) == []


def test_purge_removes_only_old_executions_in_batches(store_engine, journey) -> None:
    from tasks.retention import purge_executions
    from tasks.settings import use_engine_settings

    jcs = [make_journey_contact(store_engine, journey, c) for c in journey.contacts]
    for jc in jcs:
        walk(journey.tenant_id, jc, entry(journey))
    with store_engine.begin() as conn:
        conn.execute(
            update(JourneyNodeExecution)
            .where(JourneyNodeExecution.journey_contact_id.in_(jcs[:2]))
            .values(executed_at=seconds_from_now(-100 * 86400))
        )
    use_engine_settings(EngineSettings(purge_after_days=90, purge_batch_size=3))
    try:
        assert purge_executions.run() == {"deleted": 8}
    finally:
        use_engine_settings(None)
    with store_engine.connect() as conn:
        left = conn.execute(select(JourneyNodeExecution.journey_contact_id)).scalars().all()
        messages = conn.execute(select(func.count()).select_from(Message)).scalar()
    assert sorted(set(left)) == [jcs[2]] and len(left) == 4
    assert messages == 6  # messages outlive their executions (the reference is set to NULL)


def test_two_workers_with_the_same_webhook_step_call_it_once(store_engine) -> None:
    """The claim is optimistic for database-only steps; a webhook is an outside effect, so the
    step is held exclusively per journey contact and the second worker never calls it."""
    from tasks.http import HttpResponse

    tenant_id = make_tenant(store_engine)
    fixture = make_journey(
        store_engine,
        tenant_id,
        [("hook", "webhook", {"url": "https://hooks.example.test/x"}, None)],
    )
    jc = make_journey_contact(store_engine, fixture, make_contacts(store_engine, tenant_id, 1)[0])
    calls: list[str] = []
    in_call = threading.Event()
    release = threading.Event()

    def held_http(url, payload, *, method, timeout, idempotency_key):
        calls.append(idempotency_key)
        in_call.set()
        assert release.wait(20), "the test never released the webhook"
        return HttpResponse(200, "{}")

    def second_worker_while_the_first_calls() -> Any:
        assert in_call.wait(20)
        # The first worker is inside the call: the second must not call, whatever it waits on.
        return run_step(tenant_id, jc, fixture.nodes["hook"], 0, http=held_http)

    def release_once_the_second_waits() -> None:
        assert in_call.wait(20)
        if is_postgresql(store_engine):
            # The interleaving, forced: the second is blocked on the step's lock right now.
            wait_for_lock_waiter(store_engine)
        else:
            # SQLite's busy wait on BEGIN IMMEDIATE cannot be seen from outside: give it time.
            time.sleep(0.5)
        release.set()

    # Two workers, as two prefork children would be: each with a pool of its own size (a webhook
    # step holds two connections), or the second would wait on the pool, never on the lock.
    engine = db_engine.build_engine(
        DbSettings(url=store_engine.url, pool_size=4, max_overflow=0)
        if is_postgresql(store_engine)
        else DbSettings(url=store_engine.url)
    )
    db_engine.use_engine(engine)
    try:
        outcomes = run_in_threads(
            lambda: run_step(tenant_id, jc, fixture.nodes["hook"], 0, http=held_http),
            second_worker_while_the_first_calls,
            release_once_the_second_waits,
        )[:2]
    finally:
        db_engine.use_engine(store_engine)
        engine.dispose()
    assert sorted(o.outcome for o in outcomes) == ["duplicate", "executed"]
    assert calls == [f"{jc}:0"]
    assert row_counts(store_engine, jc)["executions"] == 1


# --- batches ------------------------------------------------------------------------------


def enroll_rows(
    engine: Engine, fixture: JourneyFixture, contacts: list[uuid.UUID]
) -> list[uuid.UUID]:
    return [make_journey_contact(engine, fixture, c) for c in contacts]


def test_a_batch_is_each_contact_on_its_own(store_engine) -> None:
    """Hard case 13: in one batch, one step already taken by a single-contact task, one contact
    opted out, one missing a placeholder, one journey contact deleted, one named twice; each
    gets what it would get alone and the rest proceed."""
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(
        store_engine,
        tenant_id,
        [
            ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "tag"),
            ("tag", "update_contact", {"set": {"greeted": True}}, None),
        ],
    )
    contacts = make_contacts(store_engine, tenant_id, 8)
    jcs = enroll_rows(store_engine, fixture, contacts)
    taken, opted, nameless, deleted = jcs[0], jcs[1], jcs[2], jcs[3]
    run_step(tenant_id, taken, fixture.nodes["hello"], 0)  # a single task got there first
    opt_out(store_engine, contacts[1])
    with store_engine.begin() as conn:
        conn.execute(
            update(Contact).where(Contact.id == contacts[2]).values(attributes={"plan": "pro"})
        )
        conn.execute(delete(JourneyContact).where(JourneyContact.id == deleted))
    steps = [(jc, 0) for jc in jcs] + [(jcs[4], 0)]
    outcome = run_batch(tenant_id, fixture.nodes["hello"], steps)
    by_contact = {}
    for contact in outcome.contacts:
        by_contact.setdefault(contact.journey_contact_id, []).append(contact.outcome)
    assert by_contact[taken] == ["duplicate"]
    assert by_contact[opted] == ["executed"]
    assert by_contact[nameless] == ["failed"]
    assert by_contact[deleted] == ["unknown"]
    assert sorted(by_contact[jcs[4]]) == ["duplicate", "executed"]
    assert all(by_contact[jc] == ["executed"] for jc in jcs[5:])
    # Rows: one execution and at most one message per contact and step.
    assert row_counts(store_engine, taken)["messages"] == 1
    opted_counts = row_counts(store_engine, opted)
    assert (opted_counts["messages"], opted_counts["status"]) == (0, "ACTIVE")
    assert row_counts(store_engine, nameless)["reason"] == "missing_placeholder: first_name"
    for jc in jcs[4:]:
        counts = row_counts(store_engine, jc)
        assert (counts["executions"], counts["messages"], counts["step"]) == (1, 1, 1)
    # Followups only for contacts this batch moved on: one batch message for the next node,
    # one delivery message for the five messages it recorded.
    moved = {s["journey_contact_id"] for s in next_steps(outcome)}
    assert moved == {str(jc) for jc in [opted, *jcs[4:]]}
    assert [f.task_name for f in outcome.followups] == [
        names.EXECUTE_BATCH,
        names.DELIVER_MESSAGES,
    ]
    assert len(deliveries(outcome)) == 4


def test_a_redelivered_batch_changes_nothing(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, SIMPLE)
    jcs = enroll_rows(store_engine, fixture, make_contacts(store_engine, tenant_id, 20))
    steps = [(jc, 0) for jc in jcs]
    first = run_batch(tenant_id, fixture.nodes["hello"], steps)
    again = run_batch(tenant_id, fixture.nodes["hello"], steps)
    assert first.counts() == {"executed": 20}
    assert again.counts() == {"duplicate": 20} and again.followups == []
    with store_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Message)).scalar() == 20
        assert conn.execute(select(func.count()).select_from(JourneyNodeExecution)).scalar() == 20


def test_two_workers_holding_overlapping_batches_run_each_step_once(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, SIMPLE)
    jcs = enroll_rows(store_engine, fixture, make_contacts(store_engine, tenant_id, 60))
    # Overlapping, in opposite orders: worker one has 0..39, worker two 59..20.
    one = [(jc, 0) for jc in jcs[:40]]
    two = [(jc, 0) for jc in reversed(jcs[20:])]
    with both_read_before_either_writes(store_engine, 2):
        outcomes = run_in_threads(
            lambda: run_batch(tenant_id, fixture.nodes["hello"], one),
            lambda: run_batch(tenant_id, fixture.nodes["hello"], two),
        )
    executed = [
        c.journey_contact_id for o in outcomes for c in o.contacts if c.outcome == "executed"
    ]
    assert sorted(executed) == sorted(jcs)
    published = [s["journey_contact_id"] for o in outcomes for s in next_steps(o)]
    assert sorted(published) == sorted(str(jc) for jc in jcs)
    assert sum(len(deliveries(o)) for o in outcomes) == 60
    with store_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Message)).scalar() == 60


def test_a_batch_and_a_single_task_race_for_one_contact(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, SIMPLE)
    jcs = enroll_rows(store_engine, fixture, make_contacts(store_engine, tenant_id, 10))
    contested = jcs[3]
    with both_read_before_either_writes(store_engine, 2):
        batch, single = run_in_threads(
            lambda: run_batch(tenant_id, fixture.nodes["hello"], [(jc, 0) for jc in jcs]),
            lambda: run_step(tenant_id, contested, fixture.nodes["hello"], 0),
        )
    contested_in_batch = next(c for c in batch.contacts if c.journey_contact_id == contested)
    assert sorted([contested_in_batch.outcome, single.outcome]) == ["duplicate", "executed"]
    assert batch.counts()["executed"] == 9 + (contested_in_batch.outcome == "executed")
    assert row_counts(store_engine, contested)["messages"] == 1


def test_next_steps_are_grouped_by_node_and_deliveries_batched(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, SIMPLE)
    pro = make_contacts(store_engine, tenant_id, 5)
    basic = make_contacts(
        store_engine, tenant_id, 4, attributes={"first_name": "Bo", "plan": "free"}
    )
    jcs = enroll_rows(store_engine, fixture, pro + basic)
    sent = run_batch(tenant_id, fixture.nodes["hello"], [(jc, 0) for jc in jcs])
    assert [f.task_name for f in sent.followups] == [names.EXECUTE_BATCH, names.DELIVER_MESSAGES]
    checked = run_batch(tenant_id, fixture.nodes["check"], [(jc, 1) for jc in jcs])
    groups = {
        f.kwargs["node_id"]: len(f.kwargs["journey_contacts"])
        for f in checked.followups
        if f.task_name == names.EXECUTE_BATCH
    }
    assert groups == {str(fixture.nodes["upgrade"]): 5, str(fixture.nodes["bye"]): 4}


def test_batches_split_at_the_batch_size(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, SIMPLE)
    jcs = enroll_rows(store_engine, fixture, make_contacts(store_engine, tenant_id, 7))
    outcome = run_batch(
        tenant_id,
        fixture.nodes["hello"],
        [(jc, 0) for jc in jcs],
        settings=EngineSettings(batch_size=3),
    )
    sizes = [
        (f.task_name, len(f.kwargs.get("journey_contacts") or f.kwargs["message_ids"]))
        for f in outcome.followups
    ]
    assert sizes == [
        (names.EXECUTE_BATCH, 3),
        (names.EXECUTE_BATCH, 3),
        (names.EXECUTE_BATCH, 1),
        (names.DELIVER_MESSAGES, 3),
        (names.DELIVER_MESSAGES, 3),
        (names.DELIVER_MESSAGES, 1),
    ]


def test_webhook_nodes_in_a_batch_fan_out_to_single_contact_tasks(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(
        store_engine,
        tenant_id,
        [("hook", "webhook", {"url": "https://hooks.example.test/x"}, None)],
    )
    jcs = enroll_rows(store_engine, fixture, make_contacts(store_engine, tenant_id, 3))

    def no_http(*args, **kwargs):
        raise AssertionError("a batch must not call webhooks itself")

    outcome = run_batch(tenant_id, fixture.nodes["hook"], [(jc, 0) for jc in jcs], http=no_http)
    assert outcome.counts() == {"fanned_out": 3}
    assert sorted(
        (f.task_name, f.kwargs["journey_contact_id"], f.kwargs["step"]) for f in outcome.followups
    ) == sorted((names.EXECUTE_NODE, str(jc), 0) for jc in jcs)
    assert all(row_counts(store_engine, jc)["executions"] == 0 for jc in jcs)


def walk_batches(tenant_id: uuid.UUID, node_id: uuid.UUID, jcs: list[uuid.UUID]) -> None:
    """Follow a batch's published next steps, batch by batch, until none are left."""
    queue = [(node_id, [(jc, 0) for jc in jcs])]
    while queue:
        node, steps = queue.pop(0)
        outcome = run_batch(tenant_id, node, steps)
        for f in outcome.followups:
            if f.task_name == names.EXECUTE_BATCH:
                queue.append(
                    (
                        uuid.UUID(f.kwargs["node_id"]),
                        [(uuid.UUID(jc), step) for jc, step in f.kwargs["journey_contacts"]],
                    )
                )


def journey_rows(engine: Engine, journey_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """What a journey left behind, per contact (by phone), without ids or times."""
    with engine.connect() as conn:
        contacts = conn.execute(
            select(
                Contact.phone,
                JourneyContact.status,
                JourneyContact.status_reason,
                JourneyContact.step_seq,
                JourneyContact.current_node_id,
                Contact.attributes,
            )
            .join(Contact, Contact.id == JourneyContact.contact_id)
            .where(JourneyContact.journey_id == journey_id)
        ).all()
        executions = conn.execute(
            select(
                Contact.phone,
                JourneyNodeExecution.step_seq,
                JourneyNodeExecution.node_id,
                JourneyNodeExecution.status,
                JourneyNodeExecution.error,
                JourneyNodeExecution.result,
            )
            .join(JourneyContact, JourneyContact.id == JourneyNodeExecution.journey_contact_id)
            .join(Contact, Contact.id == JourneyContact.contact_id)
            .where(JourneyContact.journey_id == journey_id)
        ).all()
        messages = conn.execute(
            select(Contact.phone, Message.body, Message.status, JourneyNodeExecution.step_seq)
            .join(Contact, Contact.id == Message.contact_id)
            .join(
                JourneyNodeExecution, JourneyNodeExecution.id == Message.journey_node_execution_id
            )
            .join(JourneyContact, JourneyContact.id == JourneyNodeExecution.journey_contact_id)
            .where(JourneyContact.journey_id == journey_id)
        ).all()
    return sorted(
        [("contact", *map(repr, r)) for r in contacts]
        + [("execution", *map(repr, r)) for r in executions]
        + [("message", *map(repr, r)) for r in messages]
    )


def test_a_contact_alone_and_in_a_batch_leave_the_same_rows(store_engine) -> None:
    """The same journeys run one contact per task and as batches: every row compares equal
    (ids and times aside)."""
    results = []
    for as_batch in (False, True):
        tenant_id = make_tenant(store_engine)
        fixture = make_journey(store_engine, tenant_id, SIMPLE)
        contacts = make_contacts(store_engine, tenant_id, 6) + make_contacts(
            store_engine, tenant_id, 4, attributes={"first_name": "Bo", "plan": "free"}
        )
        with store_engine.begin() as conn:  # the same phones in both runs, told apart by them
            for index, contact in enumerate(contacts):
                conn.execute(
                    update(Contact).where(Contact.id == contact).values(phone=f"+1666{index:07d}")
                )
        opt_out(store_engine, contacts[0])
        jcs = enroll_rows(store_engine, fixture, contacts)
        if as_batch:
            walk_batches(tenant_id, fixture.nodes["hello"], jcs)
        else:
            for jc in jcs:
                walk(tenant_id, jc, fixture.nodes["hello"])
        rows = journey_rows(store_engine, fixture.journey_id)
        # Node ids differ between the two journeys: name them.
        names_by_id = {repr(v): k for k, v in fixture.nodes.items()}
        results.append([tuple(names_by_id.get(x, x) for x in row) for row in rows])
    assert results[0] == results[1]
    # 10 contacts; 6 x 4 + 4 x 3 executions; 5 x 2 + 4 x 1 messages (one contact opted out).
    assert len(results[0]) == 10 + 36 + 14


def test_a_batch_is_two_statements_on_postgresql(pg_engine) -> None:
    """The issue's claim, counted: one read and one write per batch for send_sms, condition,
    update_contact and exit, whatever the batch size, with the node cached."""
    from cache import CacheSettings, build_cache
    from tasks.lookups import JourneyReader

    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(pg_engine, tenant_id, SIMPLE)
    jcs = enroll_rows(pg_engine, fixture, make_contacts(pg_engine, tenant_id, 50))
    reader = JourneyReader(build_cache(CacheSettings(url=None, key_prefix=f"t{uuid.uuid4().hex}")))
    # Warm the cache (the first batch of a journey fills it from the database).
    warm = enroll_rows(pg_engine, fixture, make_contacts(pg_engine, tenant_id, 1))
    run_batch(tenant_id, fixture.nodes["hello"], [(warm[0], 0)], reader=reader)
    plan = [
        ("hello", 0, jcs),
        ("check", 1, jcs),
        ("upgrade", 2, jcs),
        ("thanks", 3, jcs),
    ]
    for node, step, members in plan:
        with StatementCounter(pg_engine) as counter:
            outcome = run_batch(
                tenant_id, fixture.nodes[node], [(jc, step) for jc in members], reader=reader
            )
        assert outcome.counts() == {"executed": 50}, node
        assert counter.total == 2, (node, counter.by_kind)
        assert counter.by_kind["COMMIT"] == 0
    # The exit node, for contacts that took the other branch.
    others = enroll_rows(
        pg_engine,
        fixture,
        make_contacts(pg_engine, tenant_id, 20, attributes={"first_name": "Bo", "plan": "free"}),
    )
    for node, step in (("hello", 0), ("check", 1)):
        run_batch(tenant_id, fixture.nodes[node], [(jc, step) for jc in others], reader=reader)
    with StatementCounter(pg_engine) as counter:
        outcome = run_batch(
            tenant_id, fixture.nodes["bye"], [(jc, 2) for jc in others], reader=reader
        )
    assert outcome.counts() == {"executed": 20}
    assert counter.total == 2
