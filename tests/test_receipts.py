"""journeys.delivery_receipt against real PostgreSQL: forward only, twice is a no-op, early
receipts kept and applied when the delivery stores the provider id, racing receipts."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from db.models import EarlyDeliveryReceipt, Message
from db.statuses import MessageStatus
from tasks.deliveries import deliver
from tasks.errors import BadMessage, UnknownEntity
from tasks.receipts import delivery_receipt, handle_receipt
from tests.engine_harness import deliveries, run_step
from tests.factories import make_contacts, make_journey, make_journey_contact, make_tenant

SEND = [("hello", "send_sms", {"body": "Hi {{first_name}}"}, None)]


def queued(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    """A QUEUED message (tenant, message id); the logging provider will call it log-<id>."""
    tenant = make_tenant(engine)
    journey = make_journey(engine, tenant, SEND)
    [contact] = make_contacts(engine, tenant, 1)
    jc = make_journey_contact(engine, journey, contact)
    [message_id] = deliveries(run_step(tenant, jc, journey.nodes["hello"], 0))
    return tenant, uuid.UUID(message_id)


def sent(engine: Engine) -> tuple[uuid.UUID, uuid.UUID, str]:
    tenant, message_id = queued(engine)
    [outcome] = deliver(tenant, [message_id])
    assert outcome.outcome == "sent"
    return tenant, message_id, f"log-{message_id}"


def receipt(tenant: uuid.UUID, pid: str, status: str, **extra: Any) -> dict[str, Any]:
    return delivery_receipt.run(
        tenant_id=str(tenant), provider_message_id=pid, status=status, **extra
    )


def message(engine: Engine, message_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(Message.status, Message.error_code, Message.error).where(
                Message.id == message_id
            )
        ).one()


def early_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(EarlyDeliveryReceipt)).scalar_one()


def test_statuses_move_forward_only_and_twice_is_a_no_op(pg_engine: Engine) -> None:
    tenant, message_id, pid = sent(pg_engine)
    assert receipt(tenant, pid, "delivered")["outcome"] == "applied"
    assert receipt(tenant, pid, "delivered")["outcome"] == "unchanged"
    assert receipt(tenant, pid, "sent")["outcome"] == "unchanged"
    assert receipt(tenant, pid, "failed", error_code="30008")["outcome"] == "unchanged"
    assert tuple(message(pg_engine, message_id)) == ("DELIVERED", None, None)


def test_undelivered_records_the_error_code(pg_engine: Engine) -> None:
    tenant, message_id, pid = sent(pg_engine)
    assert receipt(tenant, pid, "SENT")["outcome"] == "unchanged"  # already SENT
    out = receipt(tenant, pid, "undelivered", error_code="30003", occurred_at="2026-12-01T01:00Z")
    assert out == {"outcome": "applied", "message_id": str(message_id), "status": "UNDELIVERED"}
    assert tuple(message(pg_engine, message_id)) == ("UNDELIVERED", "30003", "receipt: undelivered")


def test_an_early_receipt_is_applied_when_the_delivery_stores_the_id(pg_engine: Engine) -> None:
    tenant, message_id = queued(pg_engine)
    pid = f"log-{message_id}"
    assert receipt(tenant, pid, "delivered")["outcome"] == "kept"
    assert receipt(tenant, pid, "sent")["outcome"] == "kept"  # out of order: DELIVERED stays
    assert early_rows(pg_engine) == 1
    [outcome] = deliver(tenant, [message_id])
    assert outcome.outcome == "sent"
    assert message(pg_engine, message_id).status == "DELIVERED"
    assert early_rows(pg_engine) == 0


def test_an_early_failure_keeps_its_code(pg_engine: Engine) -> None:
    tenant, message_id = queued(pg_engine)
    pid = f"log-{message_id}"
    assert receipt(tenant, pid, "failed", error_code="30007")["outcome"] == "kept"
    deliver(tenant, [message_id])
    assert tuple(message(pg_engine, message_id)) == ("FAILED", "30007", "receipt: failed")


def test_racing_terminal_receipts_leave_exactly_one(pg_engine: Engine) -> None:
    tenant, message_id, pid = sent(pg_engine)
    statuses = [MessageStatus.DELIVERED, MessageStatus.UNDELIVERED, MessageStatus.FAILED] * 4
    start = threading.Barrier(len(statuses))
    outcomes: list[str] = []

    def send(status: MessageStatus) -> None:
        start.wait()
        outcomes.append(handle_receipt(tenant, pid, status, "x", None).outcome)

    threads = [threading.Thread(target=send, args=(s,)) for s in statuses]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count("applied") == 1
    assert message(pg_engine, message_id).status in {"DELIVERED", "UNDELIVERED", "FAILED"}


def test_a_receipt_for_another_tenants_message_does_not_touch_it(pg_engine: Engine) -> None:
    _tenant, message_id, pid = sent(pg_engine)
    other = make_tenant(pg_engine)
    assert receipt(other, pid, "failed")["outcome"] == "kept"
    assert message(pg_engine, message_id).status == "SENT"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"provider_message_id": "p", "status": "read"}, "status must be one of"),
        ({"provider_message_id": "", "status": "sent"}, "empty"),
        ({"provider_message_id": "p", "status": "sent", "occurred_at": "yesterday"}, "ISO.8601"),
        ({"provider_message_id": "p", "status": "sent", "occurred_at": "2026-12-01T01:00"}, "zone"),
        ({"status": "sent"}, "missing argument"),
    ],
)
def test_bad_input_is_a_bad_message(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadMessage, match=problem):
        delivery_receipt.run(tenant_id=str(uuid.uuid4()), **kwargs)


def test_an_unknown_tenant_is_an_unknown_entity(pg_engine: Engine) -> None:
    with pytest.raises(UnknownEntity):
        receipt(uuid.uuid4(), "p", "sent")


def test_the_embedded_sqlite_database_keeps_and_applies_receipts(sqlite_engine: Engine) -> None:
    tenant, message_id = queued(sqlite_engine)
    pid = f"log-{message_id}"
    assert receipt(tenant, pid, "undelivered", error_code="30005")["outcome"] == "kept"
    assert receipt(tenant, pid, "sent")["outcome"] == "kept"
    deliver(tenant, [message_id])
    assert tuple(message(sqlite_engine, message_id))[:2] == ("UNDELIVERED", "30005")
    assert receipt(tenant, pid, "delivered")["outcome"] == "unchanged"
    assert early_rows(sqlite_engine) == 0
