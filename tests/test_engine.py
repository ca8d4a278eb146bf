"""The engine against real PostgreSQL: one step per transaction, exactly-once effects."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.exc import OperationalError

from db import queries
from db.engine import transaction
from db.models import Journey, JourneyContact, JourneyNode, JourneyNodeExecution, Message, Tenant
from db.step_store import PostgresStepStore
from tasks.errors import UnknownEntity
from tasks.settings import EngineSettings
from tests.engine_harness import next_steps, row_counts, run_step, walk
from tests.factories import (
    JourneyFixture,
    make_contacts,
    make_journey,
    make_journey_contact,
    make_tenant,
)

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
def journey(pg_engine: Engine) -> JourneyFixture:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(pg_engine, tenant_id, SIMPLE)
    fixture.contacts = make_contacts(pg_engine, tenant_id, 3)
    return fixture


def make_due(engine: Engine, jc: uuid.UUID) -> None:
    """Time passes: the journey contact's wait or grace period is over."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE journey_contacts SET due_at = now() - interval '1 second' WHERE id = :id"),
            {"id": jc},
        )


def entry(journey: JourneyFixture) -> uuid.UUID:
    return journey.nodes["hello"]


def test_journey_walks_to_completion_with_one_row_per_step(pg_engine, journey) -> None:
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    outcomes = walk(journey.tenant_id, jc, entry(journey))
    assert [o.node_type for o in outcomes] == [
        "send_sms",
        "condition",
        "update_contact",
        "send_sms",
    ]
    counts = row_counts(pg_engine, jc)
    assert counts | {"due_at": None} == {
        "status": "COMPLETED",
        "reason": None,
        "step": 4,
        "executions": 4,
        "messages": 2,
        "due_at": None,
        "current_node_id": None,
    }
    with pg_engine.connect() as conn:
        bodies = conn.execute(select(Message.body).order_by(Message.created_at)).scalars().all()
        attributes = conn.execute(
            text("SELECT attributes FROM contacts WHERE id = :id"), {"id": journey.contacts[0]}
        ).scalar()
    assert sorted(bodies) == ["Hi Ann0", "Thanks Ann0"]
    assert attributes["stage"] == "upsold" and attributes["plan"] == "pro"


def test_same_message_delivered_twice_runs_once(pg_engine, journey) -> None:
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    first = run_step(journey.tenant_id, jc, entry(journey), 0)
    again = run_step(journey.tenant_id, jc, entry(journey), 0)
    assert first.outcome == "executed" and len(next_steps(first)) == 1
    assert again.outcome == "duplicate" and again.followups == []
    counts = row_counts(pg_engine, jc)
    assert (counts["executions"], counts["messages"], counts["step"]) == (1, 1, 1)


def test_upstream_row_without_step_is_the_first_step_exactly_once(pg_engine, journey) -> None:
    # Upstream inserted the journey contact and publishes execute_node with no step.
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    first = run_step(journey.tenant_id, jc, entry(journey), None)
    again = run_step(journey.tenant_id, jc, entry(journey), None)
    assert (first.outcome, again.outcome) == ("executed", "duplicate")
    assert row_counts(pg_engine, jc)["messages"] == 1


def test_upstream_pending_execution_row_is_completed_not_duplicated(pg_engine, journey) -> None:
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    pending_id = uuid.uuid4()
    with pg_engine.begin() as conn:
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
    with pg_engine.connect() as conn:
        rows = conn.execute(
            select(
                JourneyNodeExecution.id, JourneyNodeExecution.status, JourneyNodeExecution.step_seq
            )
        ).all()
    assert rows == [(pending_id, "COMPLETED", 0)]


def test_two_workers_with_the_same_message_one_wins(pg_engine, journey) -> None:
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    barrier = threading.Barrier(2)
    outcomes = []

    def worker() -> None:
        barrier.wait()
        outcomes.append(run_step(journey.tenant_id, jc, entry(journey), 0))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(o.outcome for o in outcomes) == ["duplicate", "executed"]
    assert sum(len(next_steps(o)) for o in outcomes) == 1
    counts = row_counts(pg_engine, jc)
    assert (counts["executions"], counts["messages"]) == (1, 1)


def test_database_failing_during_the_write_leaves_nothing_then_the_retry_sends_once(
    pg_engine, journey, monkeypatch
) -> None:
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    real_write = PostgresStepStore.write
    calls = {"n": 0}

    def lose_the_database_first(store, write):
        calls["n"] += 1
        if calls["n"] == 1:
            # The server drops this very connection as the step is being written.
            store.connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return real_write(store, write)

    monkeypatch.setattr(PostgresStepStore, "write", lose_the_database_first)
    with pytest.raises(OperationalError):
        run_step(journey.tenant_id, jc, entry(journey), 0)
    counts = row_counts(pg_engine, jc)
    assert (counts["executions"], counts["messages"], counts["step"]) == (0, 0, 0)
    retried = run_step(journey.tenant_id, jc, entry(journey), 0)  # what Celery's retry does
    assert retried.outcome == "executed" and len(next_steps(retried)) == 1
    counts = row_counts(pg_engine, jc)
    assert (counts["executions"], counts["messages"], counts["step"]) == (1, 1, 1)


def test_database_failing_after_the_send_was_recorded_never_sends_twice(
    pg_engine, journey, monkeypatch
) -> None:
    """The write committed (the message is recorded), then the task died before publishing:
    the redelivered message is a duplicate, and the next step is still scheduled exactly once
    (its row is due; the dispatcher publishes it after the grace period)."""
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    real_write = PostgresStepStore.write

    def write_then_lose_the_database(store, write):
        claimed = real_write(store, write)
        store.connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return claimed

    monkeypatch.setattr(PostgresStepStore, "write", write_then_lose_the_database)
    with pytest.raises(OperationalError):
        run_step(journey.tenant_id, jc, entry(journey), 0)
    monkeypatch.undo()
    again = run_step(journey.tenant_id, jc, entry(journey), 0)
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
        due = queries.claim_due_steps(session, batch_size=10, grace_seconds=300)
    assert [(d.node_id, d.step_seq) for d in due] == [(journey.nodes["check"], 1)]


def test_unknown_and_foreign_journey_contacts_are_the_same_error(pg_engine, journey) -> None:
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    other_tenant = make_tenant(pg_engine, name="Other")
    with pytest.raises(UnknownEntity, match="unknown_journey_contact"):
        run_step(journey.tenant_id, uuid.uuid4(), entry(journey))
    with pytest.raises(UnknownEntity, match="unknown_journey_contact"):
        run_step(other_tenant, jc, entry(journey))
    assert row_counts(pg_engine, jc)["executions"] == 0


def test_opted_out_contact_is_skipped_and_the_journey_goes_on(pg_engine, journey) -> None:
    with pg_engine.begin() as conn:
        conn.execute(
            text("UPDATE contacts SET opted_out_at = now() WHERE id = :id"),
            {"id": journey.contacts[0]},
        )
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    outcomes = walk(journey.tenant_id, jc, entry(journey))
    assert outcomes[0].execution_status == "SKIPPED"
    counts = row_counts(pg_engine, jc)
    assert (counts["status"], counts["messages"], counts["executions"]) == ("COMPLETED", 0, 4)


def test_missing_placeholder_fails_the_contact_visibly(pg_engine) -> None:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(
        pg_engine, tenant_id, [("hello", "send_sms", {"body": "Hi {{nickname}}"}, None)]
    )
    contact = make_contacts(pg_engine, tenant_id, 1)[0]
    jc = make_journey_contact(pg_engine, fixture, contact)
    outcome = run_step(tenant_id, jc, fixture.nodes["hello"])
    assert outcome.outcome == "failed"
    counts = row_counts(pg_engine, jc)
    assert (counts["status"], counts["reason"], counts["messages"]) == (
        "FAILED",
        "missing_placeholder: nickname",
        0,
    )
    with pg_engine.connect() as conn:
        assert conn.execute(
            select(JourneyNodeExecution.status, JourneyNodeExecution.error)
        ).one() == (
            "FAILED",
            "missing_placeholder: nickname",
        )


@pytest.mark.parametrize(
    ("node_type", "config", "reason"),
    [
        ("wait", {"seconds": "soon"}, "invalid_node_config: wait seconds"),
        ("teleport", {}, "invalid_node_config: unknown node type 'teleport'"),
    ],
)
def test_invalid_node_config_fails_the_contact_with_the_reason(
    pg_engine, node_type, config, reason
) -> None:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(pg_engine, tenant_id, [("bad", node_type, config, None)])
    jc = make_journey_contact(pg_engine, fixture, make_contacts(pg_engine, tenant_id, 1)[0])
    outcome = run_step(tenant_id, jc, fixture.nodes["bad"])
    counts = row_counts(pg_engine, jc)
    assert outcome.outcome == "failed" and counts["status"] == "FAILED"
    assert counts["reason"].startswith(reason)


LOOP = [
    ("touch", "update_contact", {"set": {"touched": True}}, "pause"),
    ("pause", "wait", {"seconds": 0}, "touch"),
]


def test_loop_guard_fails_a_fast_loop(pg_engine) -> None:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(pg_engine, tenant_id, LOOP)
    jc = make_journey_contact(pg_engine, fixture, make_contacts(pg_engine, tenant_id, 1)[0])
    outcomes = walk(tenant_id, jc, fixture.nodes["touch"])
    counts = row_counts(pg_engine, jc)
    assert (counts["status"], counts["reason"]) == ("FAILED", "loop_detected")
    # Three runs of 'touch' are allowed within the window; the fourth is the loop.
    touched = [o for o in outcomes if o.node_type == "update_contact" and o.outcome == "executed"]
    assert len(touched) == 3


def test_loop_guard_uses_its_narrow_query_once_history_is_long(pg_engine) -> None:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(pg_engine, tenant_id, LOOP)
    jc = make_journey_contact(pg_engine, fixture, make_contacts(pg_engine, tenant_id, 1)[0])
    # Twelve old, legitimate runs push the history past the recent-executions window.
    with pg_engine.begin() as conn:
        for step in range(12):
            node = fixture.nodes["touch" if step % 2 == 0 else "pause"]
            conn.execute(
                insert(JourneyNodeExecution).values(
                    tenant_id=tenant_id,
                    journey_contact_id=jc,
                    node_id=node,
                    status="COMPLETED",
                    step_seq=step,
                    executed_at=text(f"now() - interval '{30 - step} days'"),
                    created_at=text(f"now() - interval '{30 - step} days'"),
                )
            )
        conn.execute(update(JourneyContact).where(JourneyContact.id == jc).values(step_seq=12))
    outcomes = walk(tenant_id, jc, fixture.nodes["touch"], 12)
    assert row_counts(pg_engine, jc)["reason"] == "loop_detected"
    assert len([o for o in outcomes if o.node_type == "update_contact"]) == 4


def test_a_weekly_loop_through_a_wait_keeps_working(pg_engine) -> None:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(
        pg_engine,
        tenant_id,
        [
            ("remind", "send_sms", {"body": "Weekly reminder"}, "week"),
            ("week", "wait", {"seconds": 7 * 24 * 3600}, "remind"),
        ],
    )
    jc = make_journey_contact(pg_engine, fixture, make_contacts(pg_engine, tenant_id, 1)[0])
    node, step = fixture.nodes["remind"], 0
    for _week in range(6):
        walk(tenant_id, jc, node, step)
        counts = row_counts(pg_engine, jc)
        assert counts["status"] == "WAITING", counts
        # A week passes: move history and the wake time back seven days.
        with pg_engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE journey_node_executions SET executed_at = executed_at - interval '7 days', "
                    "created_at = created_at - interval '7 days' WHERE journey_contact_id = :jc"
                ),
                {"jc": jc},
            )
            conn.execute(
                text(
                    "UPDATE journey_contacts SET due_at = due_at - interval '7 days' WHERE id = :jc"
                ),
                {"jc": jc},
            )
        node, step = counts["current_node_id"], counts["step"]
    assert row_counts(pg_engine, jc)["messages"] == 6


def test_step_cap_stops_what_the_loop_guard_misses(pg_engine) -> None:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(pg_engine, tenant_id, LOOP)
    jc = make_journey_contact(pg_engine, fixture, make_contacts(pg_engine, tenant_id, 1)[0])
    settings = EngineSettings(loop_repeats=1000, max_steps=7)
    walk(tenant_id, jc, fixture.nodes["touch"], settings=settings)
    counts = row_counts(pg_engine, jc)
    assert (counts["status"], counts["reason"], counts["executions"]) == (
        "FAILED",
        "step_limit_exceeded",
        7,
    )


def test_suspended_tenant_holds_contacts_and_resume_continues_them(pg_engine, journey) -> None:
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    with pg_engine.begin() as conn:
        conn.execute(
            update(Tenant).where(Tenant.id == journey.tenant_id).values(status="SUSPENDED")
        )
    held = run_step(journey.tenant_id, jc, entry(journey))
    assert held.outcome == "held"
    counts = row_counts(pg_engine, jc)
    assert (counts["status"], counts["reason"], counts["messages"], counts["step"]) == (
        "PAUSED",
        "tenant_suspended",
        0,
        0,
    )
    # Resuming: the tenant is ACTIVE again and tenant_updated releases its held contacts.
    with pg_engine.begin() as conn:
        conn.execute(update(Tenant).where(Tenant.id == journey.tenant_id).values(status="ACTIVE"))
    with transaction() as session:
        assert (
            queries.resume_held_contacts(session, journey.tenant_id, reasons=["tenant_suspended"])
            == 1
        )
        due = queries.claim_due_steps(session, batch_size=10, grace_seconds=300)
    assert [(d.journey_contact_id, d.node_id, d.step_seq) for d in due] == [(jc, entry(journey), 0)]
    walk(journey.tenant_id, jc, entry(journey), 0)
    assert row_counts(pg_engine, jc)["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("status", "contact_status", "reason"),
    [
        ("PAUSED", "PAUSED", "journey_paused"),
        ("DRAFT", "PAUSED", "journey_draft"),
        ("ARCHIVED", "EXITED", "journey_archived"),
    ],
)
def test_journey_not_active_sends_nothing(
    pg_engine, journey, status, contact_status, reason
) -> None:
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    with pg_engine.begin() as conn:
        conn.execute(update(Journey).where(Journey.id == journey.journey_id).values(status=status))
    run_step(journey.tenant_id, jc, entry(journey))
    counts = row_counts(pg_engine, jc)
    assert (counts["status"], counts["reason"], counts["messages"]) == (contact_status, reason, 0)


def test_node_deleted_while_contacts_wait_fails_them_with_a_reason(pg_engine) -> None:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(
        pg_engine,
        tenant_id,
        [
            ("pause", "wait", {"seconds": 3600}, "after"),
            ("after", "send_sms", {"body": "later"}, None),
        ],
    )
    jc = make_journey_contact(pg_engine, fixture, make_contacts(pg_engine, tenant_id, 1)[0])
    run_step(tenant_id, jc, fixture.nodes["pause"])
    assert row_counts(pg_engine, jc)["status"] == "WAITING"
    with pg_engine.begin() as conn:
        conn.execute(delete(JourneyNode).where(JourneyNode.id == fixture.nodes["after"]))
    make_due(pg_engine, jc)
    with transaction() as session:
        due = queries.claim_due_steps(session, batch_size=10, grace_seconds=300)
    assert len(due) == 1
    outcome = run_step(tenant_id, jc, due[0].node_id, due[0].step_seq)
    counts = row_counts(pg_engine, jc)
    assert outcome.outcome == "failed"
    assert (counts["status"], counts["reason"]) == (
        "FAILED",
        f"node_not_found: {fixture.nodes['after']}",
    )


def test_wait_is_stored_in_the_database_and_dispatched_once_when_due(pg_engine) -> None:
    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(
        pg_engine,
        tenant_id,
        [
            ("pause", "wait", {"seconds": 3600}, "after"),
            ("after", "send_sms", {"body": "an hour later"}, None),
        ],
    )
    jc = make_journey_contact(pg_engine, fixture, make_contacts(pg_engine, tenant_id, 1)[0])
    outcome = run_step(tenant_id, jc, fixture.nodes["pause"])
    assert outcome.followups == []  # nothing goes to the broker for a wait
    counts = row_counts(pg_engine, jc)
    assert counts["status"] == "WAITING" and counts["current_node_id"] == fixture.nodes["after"]
    # An early message for the next step (a stray duplicate) must not cut the wait short.
    assert run_step(tenant_id, jc, fixture.nodes["after"], 1).outcome == "duplicate"
    with transaction() as session:
        assert queries.claim_due_steps(session, batch_size=10, grace_seconds=300) == []
    make_due(pg_engine, jc)
    with transaction() as session:
        due = queries.claim_due_steps(session, batch_size=10, grace_seconds=300)
    with transaction() as session:
        assert queries.claim_due_steps(session, batch_size=10, grace_seconds=300) == []
    assert [(d.node_id, d.step_seq) for d in due] == [(fixture.nodes["after"], 1)]
    walk(tenant_id, jc, due[0].node_id, due[0].step_seq)
    assert row_counts(pg_engine, jc) | {"due_at": None} == row_counts(pg_engine, jc) | {
        "status": "COMPLETED",
        "messages": 1,
        "executions": 2,
        "due_at": None,
    }


def test_lost_enqueue_is_recovered_by_the_dispatcher(pg_engine, journey) -> None:
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    settings = EngineSettings(redispatch_grace_seconds=60)
    first = run_step(journey.tenant_id, jc, entry(journey), 0, settings=settings)
    # The process died after commit: the followup was never published.
    lost = next_steps(first)[0]
    with transaction() as session:
        assert queries.claim_due_steps(session, batch_size=10, grace_seconds=60) == []
    make_due(pg_engine, jc)  # the grace period passes
    with transaction() as session:
        due = queries.claim_due_steps(session, batch_size=10, grace_seconds=60)
    assert [(str(d.node_id), d.step_seq, d.redispatch_count) for d in due] == [
        (lost["node_id"], lost["step"], 1)
    ]
    walk(journey.tenant_id, jc, due[0].node_id, due[0].step_seq)
    # And the original message, if it turns up after all, is a duplicate.
    assert (
        run_step(journey.tenant_id, jc, uuid.UUID(lost["node_id"]), lost["step"]).outcome
        == "duplicate"
    )
    counts = row_counts(pg_engine, jc)
    assert (counts["status"], counts["executions"], counts["messages"]) == ("COMPLETED", 4, 2)


def test_two_dispatchers_never_claim_the_same_row(pg_engine, journey) -> None:
    contacts = make_contacts(pg_engine, journey.tenant_id, 300)
    for contact in contacts:
        make_journey_contact(pg_engine, journey, contact)
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE journey_contacts SET status = 'WAITING', due_at = now() - interval '1 second'"
            )
        )
    claimed: list[list[uuid.UUID]] = [[], []]
    barrier = threading.Barrier(2)

    def dispatcher(index: int) -> None:
        barrier.wait()
        while True:
            with transaction() as session:
                batch = queries.claim_due_steps(session, batch_size=25, grace_seconds=300)
            if not batch:
                return
            claimed[index].extend(d.journey_contact_id for d in batch)

    threads = [threading.Thread(target=dispatcher, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = claimed[0] + claimed[1]
    assert len(everything) == len(set(everything)) == 300


def test_enroll_is_idempotent_and_ignores_foreign_contacts(pg_engine, journey) -> None:
    other_tenant = make_tenant(pg_engine, name="Other")
    foreign = make_contacts(pg_engine, other_tenant, 2)
    ids = journey.contacts + foreign + [uuid.uuid4()]
    with transaction() as session:
        created = queries.enroll_contacts(
            session,
            tenant_id=journey.tenant_id,
            journey_id=journey.journey_id,
            entry_node_id=entry(journey),
            contact_ids=ids,
            grace_seconds=300,
        )
    with transaction() as session:
        again = queries.enroll_contacts(
            session,
            tenant_id=journey.tenant_id,
            journey_id=journey.journey_id,
            entry_node_id=entry(journey),
            contact_ids=ids,
            grace_seconds=300,
        )
    assert len(created) == 3 and again == []
    with pg_engine.connect() as conn:
        rows = conn.execute(
            select(JourneyContact.contact_id, JourneyContact.status, JourneyContact.step_seq)
        ).all()
    assert sorted(rows) == sorted((c, "ACTIVE", 0) for c in journey.contacts)


def test_each_redispatch_is_counted_and_rearmed(pg_engine, journey) -> None:
    jc = make_journey_contact(pg_engine, journey, journey.contacts[0])
    for _ in range(3):
        make_due(pg_engine, jc)
        with transaction() as session:
            due = queries.claim_due_steps(session, batch_size=10, grace_seconds=60)
    assert due[0].redispatch_count == 3
    with pg_engine.connect() as conn:
        in_future = conn.execute(
            text("SELECT due_at > now() FROM journey_contacts WHERE id = :id"), {"id": jc}
        ).scalar()
    assert in_future  # re-armed: not claimed again until another grace period passes


def test_purge_removes_only_old_executions_in_batches(pg_engine, journey) -> None:
    from tasks.journeys import purge_executions
    from tasks.settings import use_engine_settings

    jcs = [make_journey_contact(pg_engine, journey, c) for c in journey.contacts]
    for jc in jcs:
        walk(journey.tenant_id, jc, entry(journey))
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE journey_node_executions SET executed_at = now() - interval '100 days' WHERE journey_contact_id = ANY(:ids)"
            ),
            {"ids": jcs[:2]},
        )
    use_engine_settings(EngineSettings(purge_after_days=90, purge_batch_size=3))
    try:
        assert purge_executions.run() == {"deleted": 8}
    finally:
        use_engine_settings(None)
    with pg_engine.connect() as conn:
        left = conn.execute(select(JourneyNodeExecution.journey_contact_id)).scalars().all()
        messages = conn.execute(select(func.count()).select_from(Message)).scalar()
    assert sorted(set(left)) == [jcs[2]] and len(left) == 4
    assert messages == 6  # messages outlive their executions (the reference is set to NULL)


def test_two_workers_with_the_same_webhook_step_call_it_once(pg_engine) -> None:
    """The claim is optimistic for database-only steps; a webhook is an outside effect, so the
    step is serialized per journey contact and the second worker never calls it."""
    import time as _time

    from tasks.http import HttpResponse

    tenant_id = make_tenant(pg_engine)
    fixture = make_journey(
        pg_engine, tenant_id, [("hook", "webhook", {"url": "https://hooks.example.test/x"}, None)]
    )
    jc = make_journey_contact(pg_engine, fixture, make_contacts(pg_engine, tenant_id, 1)[0])
    calls: list[str] = []

    def slow_http(url, payload, *, method, timeout, idempotency_key):
        calls.append(idempotency_key)
        _time.sleep(0.5)
        return HttpResponse(200, "{}")

    barrier = threading.Barrier(2)
    outcomes = []

    def worker() -> None:
        barrier.wait()
        outcomes.append(run_step(tenant_id, jc, fixture.nodes["hook"], 0, http=slow_http))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(o.outcome for o in outcomes) == ["duplicate", "executed"]
    assert calls == [f"{jc}:0"]
    assert row_counts(pg_engine, jc)["executions"] == 1
