"""Handing QUEUED messages to the SMS provider, a batch at a time."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, select, update
from sqlalchemy.orm import Session

from db.clock import db_now, seconds_from_now
from db.dialects import dialect_insert
from db.models import Contact, Conversation, Message
from db.statuses import MessageStatus

Bind = Session | Connection


@dataclass(frozen=True)
class OutboundMessage:
    id: uuid.UUID
    tenant_id: uuid.UUID
    contact_id: uuid.UUID
    conversation_id: uuid.UUID | None
    status: str
    body: str
    phone: str | None
    # Re-checked at delivery: an opt-out that committed after the step recorded the message
    # still stops it.
    opted_out: bool


@dataclass(frozen=True)
class DeliveryResult:
    message_id: uuid.UUID
    status: str  # SENT or FAILED
    conversation_id: uuid.UUID
    error: str | None = None


def lock_queued_messages(
    bind: Bind, tenant_id: uuid.UUID, message_ids: Sequence[uuid.UUID]
) -> list[OutboundMessage]:
    """The tenant's QUEUED messages among the ids, locked for this transaction. A message
    another worker is delivering right now is skipped (it has it), not waited for."""
    if not message_ids:
        return []
    opted_out = and_(Contact.opted_out_at.is_not(None), Contact.opted_out_at <= db_now())
    stmt = (
        select(
            Message.id,
            Message.tenant_id,
            Message.contact_id,
            Message.conversation_id,
            Message.status,
            Message.body,
            Contact.phone,
            opted_out.label("opted_out"),
        )
        .join(Contact, Contact.id == Message.contact_id)
        .where(
            Message.id.in_(list(message_ids)),
            Message.tenant_id == tenant_id,
            Message.status == MessageStatus.QUEUED.value,
        )
        .order_by(Message.id)
        .with_for_update(of=Message, skip_locked=True)
    )
    return [OutboundMessage(*row[:7], opted_out=bool(row.opted_out)) for row in bind.execute(stmt)]


def message_statuses(
    bind: Bind, tenant_id: uuid.UUID, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The status of each of the tenant's messages among the ids (unknown and foreign ids are
    absent)."""
    if not message_ids:
        return {}
    stmt = select(Message.id, Message.status).where(
        Message.id.in_(list(message_ids)), Message.tenant_id == tenant_id
    )
    return {message_id: status for message_id, status in bind.execute(stmt)}


def ensure_conversations(
    bind: Bind, tenant_id: uuid.UUID, contact_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """Each contact's conversation, created once whatever the concurrency (ON CONFLICT)."""
    wanted = sorted(set(contact_ids))
    if not wanted:
        return {}
    bind.execute(
        dialect_insert(bind)(Conversation)
        .values([{"id": uuid.uuid4(), "tenant_id": tenant_id, "contact_id": c} for c in wanted])
        .on_conflict_do_nothing(index_elements=["tenant_id", "contact_id"])
    )
    rows = bind.execute(
        select(Conversation.contact_id, Conversation.id).where(
            Conversation.tenant_id == tenant_id, Conversation.contact_id.in_(wanted)
        )
    )
    return {contact_id: conversation_id for contact_id, conversation_id in rows}


def finish_messages(bind: Bind, tenant_id: uuid.UUID, results: Sequence[DeliveryResult]) -> None:
    """Record what the provider said: one executemany for the sent, one for the failed."""
    sent = MessageStatus.SENT.value
    for was_sent in (True, False):
        rows = [
            {
                "b_message_id": r.message_id,
                "b_status": r.status,
                "b_error": r.error,
                "b_conversation_id": r.conversation_id,
            }
            for r in results
            if (r.status == sent) is was_sent
        ]
        if not rows:
            continue
        stmt = (
            update(Message)
            .where(
                Message.id == bindparam("b_message_id"),
                Message.tenant_id == tenant_id,
                Message.status == MessageStatus.QUEUED.value,
            )
            .values(
                status=bindparam("b_status"),
                error=bindparam("b_error"),
                conversation_id=bindparam("b_conversation_id"),
                attempts=Message.attempts + 1,
                sent_at=db_now() if was_sent else None,
                updated_at=db_now(),
            )
        )
        bind.execute(stmt, rows)


def claim_stale_messages(
    bind: Bind, *, batch_size: int, grace_seconds: float
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """QUEUED messages whose delivery task seems lost: touch them and return (tenant, id)."""
    claim = (
        select(Message.id)
        .where(
            Message.status == MessageStatus.QUEUED.value,
            Message.updated_at <= seconds_from_now(-grace_seconds),
        )
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Message)
        .where(Message.id.in_(claim.scalar_subquery()))
        .values(updated_at=db_now())
        .returning(Message.tenant_id, Message.id)
    )
    return [(row[0], row[1]) for row in bind.execute(stmt)]
