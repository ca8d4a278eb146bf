"""journeys.inbound_message against real PostgreSQL: keywords, opt-out and opt-in with their
audit trail, queued sends stopped, unknown phones, redelivery, the sms_reply event."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text, update

from db.models import Contact, ContactConsentChange, ContactEvent, Message, Tenant
from tasks.deliveries import deliver
from tasks.errors import BadMessage, UnknownEntity
from tasks.inbound import InboundSms, handle_inbound, inbound_message
from tests.engine_harness import deliveries, run_step
from tests.factories import make_journey, make_journey_contact, make_tenant

TENANT_NUMBER = "+14155550100"
SEND = [("hello", "send_sms", {"body": "Hi {{first_name}}"}, None)]

# A held-back copy of the keyword table: (body, opts out).
KEYWORD_TABLE = [
    ("STOP", True),
    ("Stop.", True),
    (" stop ", True),
    ("STOPALL", True),
    ("unsubscribe", True),
    ("Cancel", True),
    ("END", True),
    ("quit!", True),
    ("REVOKE", True),
    ("OptOut", True),
    ("Don't stop", False),
    ("unstoppable", False),
    ("We have got to STOP this bill", False),
    ("stop it", False),
    ("", False),
]


def phone(index: int) -> str:
    return f"+4420794600{index:02d}"


def make_people(engine: Engine, tenant_id: uuid.UUID, count: int, **values: Any) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            insert(Contact),
            [
                {
                    "id": cid,
                    "tenant_id": tenant_id,
                    "phone": phone(i),
                    "attributes": {"first_name": f"Ann{i}"},
                    **values,
                }
                for i, cid in enumerate(ids)
            ],
        )
    return ids


def sms(tenant_id: uuid.UUID, from_phone: str, body: str, pid: str | None = None) -> InboundSms:
    return InboundSms(tenant_id, from_phone, TENANT_NUMBER, body, pid or f"in-{uuid.uuid4()}")


def opted_out(engine: Engine, contact_id: uuid.UUID) -> bool:
    with engine.connect() as conn:
        value = conn.execute(
            select(Contact.opted_out_at).where(Contact.id == contact_id)
        ).scalar_one()
    return value is not None


def audit(engine: Engine, contact_id: uuid.UUID) -> list[tuple[str, uuid.UUID | None, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                ContactConsentChange.action,
                ContactConsentChange.message_id,
                ContactConsentChange.keyword,
            )
            .where(ContactConsentChange.contact_id == contact_id)
            .order_by(ContactConsentChange.created_at)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_the_keyword_table_opts_out_whole_messages_only(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    contacts = make_people(pg_engine, tenant, len(KEYWORD_TABLE))
    for index, (body, _expected) in enumerate(KEYWORD_TABLE):
        handle_inbound(sms(tenant, phone(index), body))
    for index, (body, expected) in enumerate(KEYWORD_TABLE):
        assert opted_out(pg_engine, contacts[index]) is expected, body


def test_start_unstop_yes_opt_back_in_and_every_change_is_audited(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    [contact] = make_people(pg_engine, tenant, 1)
    for body in ("STOP", "start", "stop", "Unstop", "STOP", "yes."):
        handle_inbound(sms(tenant, phone(0), body))
    assert not opted_out(pg_engine, contact)
    trail = audit(pg_engine, contact)
    assert [a for a, _m, _k in trail] == ["OPT_OUT", "OPT_IN"] * 3
    with pg_engine.connect() as conn:
        inbound_ids = set(
            conn.execute(select(Message.id).where(Message.direction == "INBOUND")).scalars()
        )
    assert {m for _a, m, _k in trail} <= inbound_ids and len({m for _a, m, _k in trail}) == 6


def test_a_second_stop_changes_nothing_and_help_is_recorded(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    [contact] = make_people(pg_engine, tenant, 1)
    first = handle_inbound(sms(tenant, phone(0), "STOP"))
    second = handle_inbound(sms(tenant, phone(0), "stop"))
    help_ = handle_inbound(sms(tenant, phone(0), "HELP"))
    assert first.opted_out == [contact] and second.opted_out == []
    assert help_.keyword == "HELP" and opted_out(pg_engine, contact)
    assert len(audit(pg_engine, contact)) == 1
    with pg_engine.connect() as conn:
        assert (
            conn.execute(
                text(
                    "SELECT count(*) FROM messages WHERE direction = 'INBOUND' AND contact_id = :c"
                ),
                {"c": contact},
            ).scalar_one()
            == 3
        )


def test_tenant_keywords_add_to_the_built_in_ones(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    with pg_engine.begin() as conn:
        conn.execute(
            update(Tenant)
            .where(Tenant.id == tenant)
            .values(
                settings={
                    "opt_out_keywords": ["ARRET"],
                    "opt_in_keywords": ["REPRENDRE"],
                    # A malformed policy elsewhere must not stop an opt-out.
                    "quiet_hours": {"start": "nonsense"},
                }
            )
        )
    [contact] = make_people(pg_engine, tenant, 1)
    handle_inbound(sms(tenant, phone(0), "Arrêt !"))
    assert opted_out(pg_engine, contact)
    handle_inbound(sms(tenant, phone(0), "reprendre"))
    assert not opted_out(pg_engine, contact)


def test_the_phone_is_normalised_before_the_lookup(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    [contact] = make_people(pg_engine, tenant, 1)
    outcome = handle_inbound(sms(tenant, "+44 20 7946 0000", "STOP"))
    assert outcome.contact_ids == [contact] and opted_out(pg_engine, contact)


def test_an_unknown_phone_is_recorded_without_a_contact(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    make_people(pg_engine, tenant, 1)
    outcome = handle_inbound(sms(tenant, "+33142685300", "STOP", "unknown-1"))
    assert outcome.contact_ids == [] and outcome.opted_out == []
    with pg_engine.connect() as conn:
        row = conn.execute(
            select(Message.contact_id, Message.from_phone, Message.to_phone, Message.status).where(
                Message.provider_message_id == "unknown-1"
            )
        ).one()
    assert tuple(row) == (None, "+33142685300", TENANT_NUMBER, "DELIVERED")


def test_a_redelivered_inbound_message_is_applied_once(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    [contact] = make_people(pg_engine, tenant, 1)
    first = handle_inbound(sms(tenant, phone(0), "STOP", "dup-1"))
    handle_inbound(sms(tenant, phone(0), "START", "other"))
    again = handle_inbound(sms(tenant, phone(0), "STOP", "dup-1"))
    assert again.duplicate and again.message_id == first.message_id
    assert not opted_out(pg_engine, contact)  # the redelivered STOP did not opt out again
    assert len(audit(pg_engine, contact)) == 2
    with pg_engine.connect() as conn:
        events = conn.execute(
            select(ContactEvent.name, ContactEvent.properties).where(
                ContactEvent.contact_id == contact
            )
        ).all()
    assert len(events) == 2 and {e.name for e in events} == {"sms_reply"}
    assert {e.properties["body"] for e in events} == {"STOP", "START"}


def test_an_opt_out_stops_a_queued_send_and_says_so_on_its_execution(pg_engine: Engine) -> None:
    tenant = make_tenant(pg_engine)
    journey = make_journey(pg_engine, tenant, SEND)
    [contact] = make_people(pg_engine, tenant, 1)
    jc = make_journey_contact(pg_engine, journey, contact)
    [message_id] = deliveries(run_step(tenant, jc, journey.nodes["hello"], 0))
    outcome = handle_inbound(sms(tenant, phone(0), "STOP"))
    assert outcome.cancelled_messages == [uuid.UUID(message_id)]
    [result] = deliver(tenant, [uuid.UUID(message_id)])
    assert result.outcome == "duplicate" and result.detail == "FAILED"
    with pg_engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT m.status, m.error, m.sent_at, e.status AS execution_status, e.result "
                "FROM messages m JOIN journey_node_executions e "
                "ON e.id = m.journey_node_execution_id WHERE m.id = :id"
            ),
            {"id": message_id},
        ).one()
    assert (row.status, row.error, row.sent_at) == ("FAILED", "opted_out", None)
    assert row.result["not_sent"] == "opted_out"


def test_the_delivery_claim_rechecks_an_opt_out(pg_engine: Engine) -> None:
    """An opt-out written behind the inbound path's back (upstream's own UPDATE) still stops a
    queued message: the claim re-checks it."""
    tenant = make_tenant(pg_engine)
    journey = make_journey(pg_engine, tenant, SEND)
    [contact] = make_people(pg_engine, tenant, 1)
    jc = make_journey_contact(pg_engine, journey, contact)
    [message_id] = deliveries(run_step(tenant, jc, journey.nodes["hello"], 0))
    with pg_engine.begin() as conn:
        conn.execute(text("UPDATE contacts SET opted_out_at = now() WHERE id = :c"), {"c": contact})
    [result] = deliver(tenant, [uuid.UUID(message_id)])
    assert (result.outcome, result.detail) == ("failed", "opted_out")
    with pg_engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT m.status, m.error, m.sent_at, m.provider_message_id, e.result "
                "FROM messages m JOIN journey_node_executions e "
                "ON e.id = m.journey_node_execution_id WHERE m.id = :id"
            ),
            {"id": message_id},
        ).one()
    assert (row.status, row.error, row.sent_at, row.provider_message_id) == (
        "FAILED",
        "opted_out",
        None,
        None,
    )
    assert row.result["not_sent"] == "opted_out"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"from_phone": "+1", "to_phone": "+1", "body": "x"}, "missing argument"),
        ({"from_phone": 5, "to_phone": "+1", "body": "x", "provider_message_id": "p"}, "string"),
        ({"from_phone": "+1", "to_phone": "+1", "body": None, "provider_message_id": "p"}, "body"),
        ({"from_phone": "+1", "to_phone": "+1", "body": "x", "provider_message_id": ""}, "empty"),
    ],
)
def test_bad_input_is_a_bad_message(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadMessage, match=problem):
        inbound_message.run(tenant_id=str(uuid.uuid4()), **kwargs)


def test_an_unknown_tenant_is_an_unknown_entity(pg_engine: Engine) -> None:
    with pytest.raises(UnknownEntity):
        handle_inbound(sms(uuid.uuid4(), phone(0), "STOP"))


def test_an_opt_out_during_a_batchs_sends_stops_the_rest(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim found nobody opted out; the second contact opts out while the first message
    is with the provider: the second message is not sent."""
    from tasks.delivery import LoggingProvider

    tenant = make_tenant(pg_engine)
    journey = make_journey(pg_engine, tenant, SEND)
    first, second = make_people(pg_engine, tenant, 2)  # phones phone(0), phone(1)
    messages = {}
    for contact in (first, second):
        jc = make_journey_contact(pg_engine, journey, contact)
        [messages[contact]] = deliveries(run_step(tenant, jc, journey.nodes["hello"], 0))
    original = LoggingProvider.send
    handed: list[uuid.UUID] = []

    def send_and_meanwhile_opt_out(self: LoggingProvider, message: Any, gate: Any = None) -> Any:
        if not handed:
            # The other contact opts out, committed while this first call is under way.
            other = 1 if message.contact_id == first else 0
            handle_inbound(sms(tenant, phone(other), "STOP"))
        sent = original(self, message, gate)
        handed.append(message.id)
        return sent

    monkeypatch.setattr(LoggingProvider, "send", send_and_meanwhile_opt_out)
    ids = [uuid.UUID(messages[first]), uuid.UUID(messages[second])]
    outcomes = {o.message_id: (o.outcome, o.detail) for o in deliver(tenant, ids)}
    [sent] = handed
    [stopped] = [m for m in ids if m != sent]
    assert outcomes == {sent: ("sent", ""), stopped: ("failed", "opted_out")}
    with pg_engine.connect() as conn:
        status = conn.execute(
            select(Message.status, Message.error).where(Message.id == stopped)
        ).one()
    assert tuple(status) == ("FAILED", "opted_out")


def test_the_embedded_sqlite_database_handles_stop_and_start(sqlite_engine: Engine) -> None:
    tenant = make_tenant(sqlite_engine)
    journey = make_journey(sqlite_engine, tenant, SEND)
    [contact] = make_people(sqlite_engine, tenant, 1)
    jc = make_journey_contact(sqlite_engine, journey, contact)
    [message_id] = deliveries(run_step(tenant, jc, journey.nodes["hello"], 0))
    stop = handle_inbound(sms(tenant, phone(0), "STOP", "s1"))
    assert stop.cancelled_messages == [uuid.UUID(message_id)]
    assert handle_inbound(sms(tenant, phone(0), "STOP", "s1")).duplicate
    handle_inbound(sms(tenant, "+33142685300", "hello"))
    handle_inbound(sms(tenant, phone(0), "start"))
    assert not opted_out(sqlite_engine, contact)
    assert [a for a, _m, _k in audit(sqlite_engine, contact)] == ["OPT_OUT", "OPT_IN"]
    with sqlite_engine.connect() as conn:
        result = conn.execute(
            text(
                "SELECT e.result FROM messages m JOIN journey_node_executions e "
                "ON e.id = m.journey_node_execution_id WHERE m.status = 'FAILED'"
            )
        ).scalar_one()
    assert '"not_sent": "opted_out"' in result or '"not_sent":"opted_out"' in result
