"""The tenant's send policy in the engine, on both step stores: quiet hours in the contact's
zone (deferred through the dispatcher, or skipped), frequency caps across journeys (checked and
counted in the write's transaction; 50 journeys at once on PostgreSQL), transactional sends,
invalid zones and settings. The rules themselves are tested in tests/test_policy_*.py."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import OperationalError

from db import dispatch, send_counters
from db.clock import as_utc
from db.engine import transaction
from db.models import ContactSend, JourneyContact, JourneyNodeExecution, Message, Tenant
from db.postgres_step_store import PostgresStepStore
from tasks import circuit_breaker, metrics
from tasks.deliveries import deliver_message
from tasks.events import tenant_updated
from tasks.policy.quiet_hours import quiet_hours_verdict
from tasks.retention import purge_executions
from tasks.send_policy import INVALID_TENANT_SETTINGS
from tasks.settings import EngineSettings, use_engine_settings
from tasks.steps import record
from tests.engine_harness import (
    deliveries,
    make_due,
    next_steps,
    row_counts,
    run_batch,
    run_step,
    walk,
)
from tests.factories import make_contacts, make_journey, make_journey_contact, make_tenant
from tests.http_stub import Reply, http_stub

TWO_SENDS = [
    ("hello", "send_sms", {"body": "Hi {{first_name}}"}, "later"),
    ("later", "send_sms", {"body": "Bye {{first_name}}"}, None),
]


def set_settings(engine: Engine, tenant_id: uuid.UUID, settings: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(update(Tenant).where(Tenant.id == tenant_id).values(settings=settings))


def db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return as_utc(conn.execute(select(func.now())).scalar_one()) or datetime.now(UTC)


def window_around(now: datetime, zone: str, before: int = 60, after: int = 120) -> dict[str, str]:
    """A quiet-hours window holding `now` in `zone`: from `before` minutes ago to `after` on."""
    wall = now.astimezone(ZoneInfo(zone))
    start = (wall - timedelta(minutes=before)).strftime("%H:%M")
    end = (wall + timedelta(minutes=after)).strftime("%H:%M")
    return {"start": start, "end": end}


def window_away_from(now: datetime, zone: str) -> dict[str, str]:
    """A window that ends well before `now` in `zone` and starts well after it."""
    wall = now.astimezone(ZoneInfo(zone))
    return {
        "start": (wall + timedelta(hours=3)).strftime("%H:%M"),
        "end": (wall + timedelta(hours=5)).strftime("%H:%M"),
    }


def executions(engine: Engine, jc: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(JourneyNodeExecution.status, JourneyNodeExecution.result)
            .where(JourneyNodeExecution.journey_contact_id == jc)
            .order_by(JourneyNodeExecution.step_seq)
        ).all()
    return [(status, result) for status, result in rows]


def counter(metric: Any, *labels: str) -> float:
    return metric.labels(*labels)._value.get()


def one_contact(engine: Engine, tenant_id: uuid.UUID, **attributes: Any) -> uuid.UUID:
    return make_contacts(engine, tenant_id, 1, attributes={"first_name": "Ann", **attributes})[0]


# --- quiet hours ----------------------------------------------------------------------------


def test_send_inside_quiet_hours_waits_at_the_node_until_the_window_ends(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    now = db_now(store_engine)
    zone = "Asia/Kathmandu"  # +05:45: a window in the contact's zone, not the server's
    quiet = {**window_around(now, zone), "action": "defer"}
    set_settings(store_engine, tenant_id, {"timezone": "UTC", "quiet_hours": quiet})
    fixture = make_journey(store_engine, tenant_id, TWO_SENDS)
    jc = make_journey_contact(
        store_engine, fixture, one_contact(store_engine, tenant_id, timezone=zone)
    )
    deferred_before = counter(metrics.SEND_POLICY, "quiet_hours", "deferred")

    outcome = run_step(tenant_id, jc, fixture.nodes["hello"])

    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["current_node_id"], counts["messages"]) == (
        "WAITING",
        fixture.nodes["hello"],
        0,
    )
    assert outcome.followups == [] and deliveries(outcome) == []
    expected_end = quiet_hours_verdict(
        datetime.strptime(quiet["start"], "%H:%M").time(),
        datetime.strptime(quiet["end"], "%H:%M").time(),
        ZoneInfo(zone),
        now,
    ).ends_at
    assert expected_end is not None
    # Due when the window ends (UTC), within the minute between this test's clock and the step's.
    assert abs(as_utc(counts["due_at"]) - expected_end) < timedelta(minutes=1)
    [(status, result)] = executions(store_engine, jc)
    assert status == "SKIPPED"
    assert result["deferred"] == "quiet_hours"
    assert (result["timezone"], result["timezone_source"]) == (zone, "contact")
    assert abs(datetime.fromisoformat(result["until"]) - expected_end) < timedelta(minutes=1)
    assert outcome.batch.contacts[0].policy == ("quiet_hours", "deferred")
    record(outcome.batch, 0.01, None)  # what the step task does after the batch
    assert counter(metrics.SEND_POLICY, "quiet_hours", "deferred") == deferred_before + 1

    # Not due yet: the dispatcher leaves it alone; a stray message for the step changes nothing.
    with transaction() as session:
        assert (
            dispatch.claim_scheduled_steps(session, per_tenant=10, limit=10, grace_seconds=300)
            == []
        )
    assert run_step(tenant_id, jc, fixture.nodes["hello"], counts["step"]).outcome == "duplicate"

    # The window's end comes (moved here, since the test cannot wait for the clock): the
    # dispatcher runs the step again and the message goes, once.
    set_settings(
        store_engine, tenant_id, {"timezone": "UTC", "quiet_hours": window_away_from(now, zone)}
    )
    make_due(store_engine, jc)
    with transaction() as session:
        [due] = dispatch.claim_scheduled_steps(session, per_tenant=10, limit=10, grace_seconds=300)
    assert (due.node_id, due.step_seq) == (fixture.nodes["hello"], counts["step"])
    sent = run_step(tenant_id, jc, due.node_id, due.step_seq)
    assert sent.outcome == "executed" and len(deliveries(sent)) == 1
    assert row_counts(store_engine, jc)["messages"] == 1
    assert [s for s, _r in executions(store_engine, jc)] == ["SKIPPED", "COMPLETED"]


def test_quiet_hours_skip_sends_nothing_and_the_journey_goes_on(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    now = db_now(store_engine)
    quiet = {**window_around(now, "UTC"), "action": "skip"}
    set_settings(store_engine, tenant_id, {"quiet_hours": quiet})
    fixture = make_journey(store_engine, tenant_id, TWO_SENDS)
    jc = make_journey_contact(store_engine, fixture, one_contact(store_engine, tenant_id))

    outcomes = walk(tenant_id, jc, fixture.nodes["hello"])

    assert [o.execution_status for o in outcomes] == ["SKIPPED", "SKIPPED"]
    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["messages"]) == ("COMPLETED", 0)
    results = [r for _s, r in executions(store_engine, jc)]
    assert [r["skipped"] for r in results] == ["quiet_hours", "quiet_hours"]
    # No contact zone and a +1 555 phone (no single zone), no tenant zone: UTC.
    assert results[0]["timezone_source"] == "default"


def test_outside_the_window_in_the_contacts_zone_sends_now(store_engine) -> None:
    """The window holds now in UTC, but it is 14 hours later on Kiritimati."""
    tenant_id = make_tenant(store_engine)
    now = db_now(store_engine)
    set_settings(store_engine, tenant_id, {"quiet_hours": window_around(now, "UTC", 30, 60)})
    fixture = make_journey(store_engine, tenant_id, TWO_SENDS)
    contact = one_contact(store_engine, tenant_id, timezone="Pacific/Kiritimati")
    jc = make_journey_contact(store_engine, fixture, contact)
    outcome = run_step(tenant_id, jc, fixture.nodes["hello"])
    assert outcome.execution_status == "COMPLETED" and len(deliveries(outcome)) == 1


def test_an_invalid_contact_zone_falls_back_counted_and_never_stops_the_send(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    now = db_now(store_engine)
    zone = "Australia/Lord_Howe"  # 30-minute DST
    set_settings(
        store_engine,
        tenant_id,
        {"timezone": zone, "quiet_hours": window_away_from(now, zone)},
    )
    fixture = make_journey(store_engine, tenant_id, TWO_SENDS)
    contact = one_contact(store_engine, tenant_id, timezone="Mars/Olympus_Mons")
    jc = make_journey_contact(store_engine, fixture, contact)
    before = counter(metrics.TIMEZONE_FALLBACKS, "contact")
    outcome = run_step(tenant_id, jc, fixture.nodes["hello"])
    assert outcome.execution_status == "COMPLETED" and len(deliveries(outcome)) == 1
    assert counter(metrics.TIMEZONE_FALLBACKS, "contact") == before + 1

    # Inside the tenant's window, the deferral says which zone it used and what it passed over.
    set_settings(
        store_engine, tenant_id, {"timezone": zone, "quiet_hours": window_around(now, zone)}
    )
    following = next_steps(outcome)[0]
    run_step(tenant_id, jc, uuid.UUID(following["node_id"]), following["step"])
    _status, result = executions(store_engine, jc)[-1]
    assert result["deferred"] == "quiet_hours"
    assert (result["timezone"], result["timezone_source"]) == (zone, "tenant")
    assert result["timezone_warnings"] == [
        "invalid_timezone: contact 'Mars/Olympus_Mons' is not a known zone"
    ]


def test_invalid_tenant_settings_hold_sends_until_upstream_fixes_them(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    set_settings(store_engine, tenant_id, {"quiet_hours": {"start": "9pm", "end": "08:00"}})
    fixture = make_journey(store_engine, tenant_id, TWO_SENDS)
    jc = make_journey_contact(store_engine, fixture, one_contact(store_engine, tenant_id))
    outcome = run_step(tenant_id, jc, fixture.nodes["hello"])
    assert (outcome.outcome, outcome.detail) == ("held", INVALID_TENANT_SETTINGS)
    counts = row_counts(store_engine, jc)
    assert (counts["status"], counts["reason"], counts["messages"]) == (
        "PAUSED",
        INVALID_TENANT_SETTINGS,
        0,
    )
    set_settings(store_engine, tenant_id, {})
    assert tenant_updated.run(tenant_id=str(tenant_id)) == {"resumed": 1}
    sent = run_step(tenant_id, jc, fixture.nodes["hello"], counts["step"])
    assert sent.execution_status == "COMPLETED" and len(deliveries(sent)) == 1


# --- frequency caps ---------------------------------------------------------------------------


def journeys_to_one_contact(
    engine: Engine, tenant_id: uuid.UUID, count: int, config: dict[str, Any] | None = None
) -> tuple[list[tuple[uuid.UUID, uuid.UUID]], uuid.UUID]:
    """`count` journeys, each a send then an update, with the same contact on each."""
    contact = one_contact(engine, tenant_id)
    steps = []
    for _ in range(count):
        fixture = make_journey(
            engine,
            tenant_id,
            [
                ("send", "send_sms", {"body": "Hi {{first_name}}", **(config or {})}, "mark"),
                ("mark", "update_contact", {"set": {"after": True}}, None),
            ],
        )
        steps.append((make_journey_contact(engine, fixture, contact), fixture.nodes["send"]))
    return steps, contact


def counted(engine: Engine, contact: uuid.UUID) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(ContactSend).where(ContactSend.contact_id == contact)
        ).scalar_one()


def test_cap_across_journeys_skips_the_rest_and_their_journeys_go_on(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    set_settings(
        store_engine, tenant_id, {"frequency_cap": {"max_messages": 2, "per_seconds": 86400}}
    )
    steps, contact = journeys_to_one_contact(store_engine, tenant_id, 4)
    outcomes = [walk(tenant_id, jc, node) for jc, node in steps]
    assert [o[0].execution_status for o in outcomes] == [
        "COMPLETED",
        "COMPLETED",
        "SKIPPED",
        "SKIPPED",
    ]
    assert all(o[-1].node_type == "update_contact" for o in outcomes)  # the journey went on
    assert [row_counts(store_engine, jc)["status"] for jc, _n in steps] == ["COMPLETED"] * 4
    assert sum(row_counts(store_engine, jc)["messages"] for jc, _n in steps) == 2
    _status, result = executions(store_engine, steps[2][0])[0]
    assert result == {"skipped": "frequency_capped", "counted": 2, "max_messages": 2}
    assert counted(store_engine, contact) == 2


def test_transactional_sends_bypass_the_cap_and_do_not_count(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    set_settings(
        store_engine, tenant_id, {"frequency_cap": {"max_messages": 1, "per_seconds": 3600}}
    )
    (first, second), contact = journeys_to_one_contact(store_engine, tenant_id, 2)
    (receipt,), _ = journeys_to_one_contact(store_engine, tenant_id, 1, {"transactional": True})
    with store_engine.begin() as conn:  # the receipt journey's contact is the same person
        conn.execute(
            update(JourneyContact).where(JourneyContact.id == receipt[0]).values(contact_id=contact)
        )
    assert run_step(tenant_id, *first).execution_status == "COMPLETED"
    assert run_step(tenant_id, *receipt).execution_status == "COMPLETED"
    assert run_step(tenant_id, *second).execution_status == "SKIPPED"
    assert counted(store_engine, contact) == 1


def test_cap_with_defer_waits_until_the_oldest_send_ages_out(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    cap = {"max_messages": 1, "per_seconds": 7200, "action": "defer"}
    set_settings(store_engine, tenant_id, {"frequency_cap": cap})
    (first, second), _contact = journeys_to_one_contact(store_engine, tenant_id, 2)
    assert run_step(tenant_id, *first).execution_status == "COMPLETED"
    outcome = run_step(tenant_id, *second)
    assert outcome.batch.contacts[0].policy == ("frequency_capped", "deferred")
    counts = row_counts(store_engine, second[0])
    assert (counts["status"], counts["current_node_id"], counts["messages"]) == (
        "WAITING",
        second[1],
        0,
    )
    with store_engine.connect() as conn:
        sent_at = as_utc(conn.execute(select(ContactSend.sent_at)).scalar_one())
    assert sent_at is not None
    assert abs(as_utc(counts["due_at"]) - (sent_at + timedelta(seconds=7200))) < timedelta(
        seconds=1
    )
    _status, result = executions(store_engine, second[0])[0]
    assert result["deferred"] == "frequency_capped"


def test_a_message_the_provider_refused_gives_its_slot_back(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    set_settings(
        store_engine, tenant_id, {"frequency_cap": {"max_messages": 1, "per_seconds": 3600}}
    )
    (first, second), contact = journeys_to_one_contact(store_engine, tenant_id, 2)
    sent = run_step(tenant_id, *first)
    [message_id] = deliveries(sent)
    with store_engine.begin() as conn:
        assert send_counters.release_sends(conn, [uuid.UUID(message_id)]) == 1
    assert run_step(tenant_id, *second).execution_status == "COMPLETED"
    assert counted(store_engine, contact) == 1


def test_fifty_journeys_sending_to_one_contact_at_once_send_exactly_the_cap(pg_engine) -> None:
    """Real concurrency on PostgreSQL: 50 threads, each its own connection and transaction,
    released together by a barrier; cap 3."""
    tenant_id = make_tenant(pg_engine)
    set_settings(pg_engine, tenant_id, {"frequency_cap": {"max_messages": 3, "per_seconds": 86400}})
    steps, contact = journeys_to_one_contact(pg_engine, tenant_id, 50)
    barrier = threading.Barrier(len(steps), timeout=60)
    results: list[Any] = [None] * len(steps)
    errors: list[BaseException] = []

    def send(index: int) -> None:
        try:
            barrier.wait()
            results[index] = run_step(tenant_id, *steps[index])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(steps))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    print(f"50 concurrent capped sends to one contact: {time.monotonic() - started:.2f} s")
    assert not errors, errors[0]
    statuses = sorted(r.execution_status for r in results)
    assert statuses.count("COMPLETED") == 3 and statuses.count("SKIPPED") == 47
    with pg_engine.connect() as conn:
        messages = conn.execute(
            select(func.count()).select_from(Message).where(Message.contact_id == contact)
        ).scalar_one()
        skipped = conn.execute(
            select(func.count())
            .select_from(JourneyNodeExecution)
            .where(JourneyNodeExecution.result["skipped"].as_string() == "frequency_capped")
        ).scalar_one()
    assert (messages, skipped, counted(pg_engine, contact)) == (3, 47, 3)
    # Every journey went on past its send node.
    assert all(next_steps(r) for r in results)


def test_same_capped_step_run_twice_counts_once(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    set_settings(
        store_engine, tenant_id, {"frequency_cap": {"max_messages": 5, "per_seconds": 3600}}
    )
    (first,), contact = journeys_to_one_contact(store_engine, tenant_id, 1)
    assert run_step(tenant_id, first[0], first[1], 0).outcome == "executed"
    assert run_step(tenant_id, first[0], first[1], 0).outcome == "duplicate"
    assert counted(store_engine, contact) == 1


@pytest.mark.parametrize(("reply", "outcome", "slots"), [(422, "failed", 0), (200, "sent", 1)])
def test_a_message_the_provider_refuses_for_good_gives_its_slot_back(
    pg_engine, reply: int, outcome: str, slots: int
) -> None:
    """Through the delivery task against a provider on 127.0.0.1: a 422 fails the message and
    frees the contact's slot for the next journey; a sent message keeps it."""
    tenant_id = make_tenant(pg_engine)
    set_settings(pg_engine, tenant_id, {"frequency_cap": {"max_messages": 1, "per_seconds": 3600}})
    (first, second), contact = journeys_to_one_contact(pg_engine, tenant_id, 2)
    [message_id] = deliveries(run_step(tenant_id, *first))
    with http_stub() as provider:
        provider.script(then=Reply(reply, body={"id": "p-1"}))
        use_engine_settings(
            EngineSettings(sms_provider="http", sms_provider_urls=provider.url_for("/sms"))
        )
        try:
            result = deliver_message.run(tenant_id=str(tenant_id), message_id=message_id)
        finally:
            use_engine_settings(None)
            circuit_breaker.reset_after_fork()
    assert result["outcome"] == outcome
    assert counted(pg_engine, contact) == slots
    expected = "COMPLETED" if slots == 0 else "SKIPPED"
    assert run_step(tenant_id, *second).execution_status == expected


def test_a_connection_lost_during_a_capped_write_counts_nothing_then_the_retry_sends_once(
    pg_engine, monkeypatch
) -> None:
    """The count and the message commit together or not at all: the server drops the
    connection as the capped step is written; the retry finds the slot free and sends once."""
    tenant_id = make_tenant(pg_engine)
    set_settings(pg_engine, tenant_id, {"frequency_cap": {"max_messages": 1, "per_seconds": 3600}})
    (first,), contact = journeys_to_one_contact(pg_engine, tenant_id, 1)
    real_write = PostgresStepStore.write
    calls = {"n": 0}

    def lose_the_database_first(store, tenant, writes):
        calls["n"] += 1
        if calls["n"] == 1:
            store.connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return real_write(store, tenant, writes)

    monkeypatch.setattr(PostgresStepStore, "write", lose_the_database_first)
    with pytest.raises(OperationalError):
        run_step(tenant_id, first[0], first[1], 0)
    assert counted(pg_engine, contact) == 0
    assert row_counts(pg_engine, first[0])["messages"] == 0
    retried = run_step(tenant_id, first[0], first[1], 0)
    assert retried.execution_status == "COMPLETED" and len(deliveries(retried)) == 1
    assert counted(pg_engine, contact) == 1


def test_retention_drops_counted_sends_no_cap_can_look_back_to(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    contact = one_contact(store_engine, tenant_id)
    now = db_now(store_engine)
    ages = {"old": timedelta(days=40), "recent": timedelta(days=30)}
    with store_engine.begin() as conn:
        send_counters.count_sends(
            conn,
            tenant_id,
            [
                send_counters.CountedSend(uuid.uuid4(), contact, None, now - age)
                for age in ages.values()
            ],
        )
    use_engine_settings(EngineSettings(purge_after_days=0))
    try:
        purge_executions.run()
    finally:
        use_engine_settings(None)
    with store_engine.connect() as conn:
        [kept] = conn.execute(select(ContactSend.sent_at)).scalars()
    assert abs(as_utc(kept) - (now - ages["recent"])) < timedelta(seconds=1)


def test_a_calendar_day_cap_defers_to_the_contacts_next_midnight(store_engine) -> None:
    tenant_id = make_tenant(store_engine)
    cap = {"max_messages": 1, "window": "calendar_day", "action": "defer"}
    set_settings(store_engine, tenant_id, {"frequency_cap": cap})
    zone = "Asia/Kathmandu"
    contact = one_contact(store_engine, tenant_id, timezone=zone)
    (first, second), _ = journeys_to_one_contact(store_engine, tenant_id, 2)
    with store_engine.begin() as conn:
        conn.execute(
            update(JourneyContact)
            .where(JourneyContact.id.in_([first[0], second[0]]))
            .values(contact_id=contact)
        )
    assert run_step(tenant_id, *first).execution_status == "COMPLETED"
    outcome = run_step(tenant_id, *second)
    assert outcome.batch.contacts[0].policy == ("frequency_capped", "deferred")
    due_at = as_utc(row_counts(store_engine, second[0])["due_at"])
    assert due_at is not None
    local = due_at.astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute, local.second) == (0, 0, 0)
    assert timedelta(0) < due_at - db_now(store_engine) <= timedelta(days=1)


def test_a_batch_of_contacts_half_at_their_cap_sends_to_the_other_half(store_engine) -> None:
    """One batch, one transaction: 200 contacts, 100 of which used their cap elsewhere. Prints
    the batch's time with and without a cap (measured, never asserted)."""
    tenant_id = make_tenant(store_engine)
    fixture = make_journey(store_engine, tenant_id, TWO_SENDS)
    contacts = make_contacts(store_engine, tenant_id, 200)
    jcs = [make_journey_contact(store_engine, fixture, c) for c in contacts]
    now = db_now(store_engine)
    with store_engine.begin() as conn:
        send_counters.count_sends(
            conn,
            tenant_id,
            [
                send_counters.CountedSend(uuid.uuid4(), c, None, now - timedelta(hours=1))
                for c in contacts[:100]
            ],
        )
    set_settings(
        store_engine, tenant_id, {"frequency_cap": {"max_messages": 1, "per_seconds": 86400}}
    )
    started = time.monotonic()
    outcome = run_batch(tenant_id, fixture.nodes["hello"], [(jc, 0) for jc in jcs])
    capped_seconds = time.monotonic() - started
    statuses = [c.execution_status for c in outcome.contacts]
    assert (statuses.count("COMPLETED"), statuses.count("SKIPPED")) == (100, 100)
    assert len(deliveries(outcome)) == 100
    by_jc = {c.journey_contact_id: c.execution_status for c in outcome.contacts}
    assert {by_jc[jc] for jc in jcs[:100]} == {"SKIPPED"}
    assert len(next_steps(outcome)) == 200  # every journey goes on
    with store_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ContactSend)).scalar_one() == 200

    set_settings(store_engine, tenant_id, {})
    started = time.monotonic()
    later = run_batch(tenant_id, fixture.nodes["later"], [(jc, 1) for jc in jcs])
    plain_seconds = time.monotonic() - started
    assert len(deliveries(later)) == 200
    print(
        f"{store_engine.dialect.name}: 200-contact send batch with a cap {capped_seconds:.3f} s,"
        f" without {plain_seconds:.3f} s"
    )
