"""Handing QUEUED messages to the SMS provider, a batch at a time, each message leased.

A delivery claims its batch with one conditional UPDATE: each QUEUED message whose lease is
free (or expired) gets `delivery_lease_until`, and only the messages that UPDATE returned are
sent. Two workers holding the same delivery never send one message twice; a worker killed in
the middle leaves leases that expire, after which the message is claimed again and sent to the
provider it is committed to with the same Idempotency-Key. Every statement is its own
transaction (no row lock is held across a provider call, no session state: PgBouncer-safe),
which is what lets the provider a message is committed to be on record BEFORE the call
(tasks/delivery.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Connection,
    Text,
    and_,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from db.clock import db_now, seconds_from_now
from db.dialects import dialect_insert
from db.models import Contact, Conversation, Message, Timestamp
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
    opted_out: bool = False
    # The provider the message is committed to, if an earlier attempt may have reached it.
    provider: str | None = None


@dataclass(frozen=True)
class DeliveryResult:
    message_id: uuid.UUID
    status: str  # SENT or FAILED
    conversation_id: uuid.UUID
    error: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    # When the worker handed the message to the provider (its clock); None: the write's time.
    sent_at: datetime | None = None


def _lease_free() -> object:
    return or_(Message.delivery_lease_until.is_(None), Message.delivery_lease_until < db_now())


def claim_messages(
    bind: Bind, tenant_id: uuid.UUID, message_ids: Sequence[uuid.UUID], lease_seconds: float
) -> list[OutboundMessage]:
    """Lease the tenant's QUEUED messages among the ids whose lease is free; return them with
    what sending needs. A message another delivery holds is not returned."""
    if not message_ids:
        return []
    claimed = bind.execute(
        update(Message)
        .where(
            Message.id.in_(list(message_ids)),
            Message.tenant_id == tenant_id,
            Message.status == MessageStatus.QUEUED.value,
            _lease_free(),
        )
        .values(delivery_lease_until=seconds_from_now(lease_seconds))
        .returning(Message.id)
    ).scalars()
    ids = sorted(claimed)
    if not ids:
        return []
    # Read after the claim (contract: from the moment an opt-out commits, no SMS goes, queued
    # ones included): an opted-out contact's message is claimed only to be failed with the
    # reason 'opted_out' (tasks/deliveries.py), never sent.
    opted_out = and_(Contact.opted_out_at.is_not(None), Contact.opted_out_at <= db_now())
    rows = bind.execute(
        select(
            Message.id,
            Message.tenant_id,
            Message.contact_id,
            Message.conversation_id,
            Message.status,
            Message.body,
            Contact.phone,
            opted_out.label("opted_out"),
            Message.provider,
        )
        .join(Contact, Contact.id == Message.contact_id)
        .where(Message.id.in_(ids))
        .order_by(Message.id)
    )
    return [
        OutboundMessage(*row[:7], opted_out=bool(row.opted_out), provider=row.provider)
        for row in rows
    ]


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


def pin_message_provider(
    bind: Bind, message_id: uuid.UUID, *, expected: str | None, provider: str | None
) -> bool:
    """Move a QUEUED message's provider from `expected` to `provider` (commit it before the
    call); False if it no longer says `expected` (or is no longer QUEUED)."""
    current = Message.provider.is_(None) if expected is None else Message.provider == expected
    result = bind.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.QUEUED.value, current)
        .values(provider=provider, updated_at=db_now())
    )
    return bool(result.rowcount)


def note_delivery_failure(bind: Bind, message_id: uuid.UUID, error: str) -> None:
    """A failed attempt of a message that stays QUEUED (it will be retried): say why, count the
    attempt, and free the lease so the retry can claim it."""
    bind.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.QUEUED.value)
        .values(
            error=error,
            attempts=Message.attempts + 1,
            delivery_lease_until=None,
            updated_at=db_now(),
        )
    )


def finish_messages(bind: Bind, tenant_id: uuid.UUID, results: Sequence[DeliveryResult]) -> None:
    """Record what the provider said and free the leases: one executemany for the sent, one
    for the failed. A provider id another message of the tenant already holds is not stored
    (null): the message is sent all the same, and a receipt must find one message."""
    sent = MessageStatus.SENT.value
    other = aliased(Message)
    provider_message_id = bindparam("b_provider_message_id", type_=Text())
    taken = exists().where(
        other.tenant_id == Message.tenant_id,
        other.provider_message_id == provider_message_id,
        other.id != Message.id,
    )
    for was_sent in (True, False):
        rows = [
            {
                "b_message_id": r.message_id,
                "b_status": r.status,
                "b_error": r.error,
                "b_conversation_id": r.conversation_id,
                "b_provider": r.provider,
                "b_provider_message_id": r.provider_message_id,
                "b_sent_at": r.sent_at,
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
                provider=func.coalesce(bindparam("b_provider", type_=Text()), Message.provider),
                provider_message_id=case((~taken, provider_message_id), else_=None),
                attempts=Message.attempts + 1,
                sent_at=(
                    func.coalesce(bindparam("b_sent_at", type_=Timestamp), db_now())
                    if was_sent
                    else None
                ),
                delivery_lease_until=None,
                updated_at=db_now(),
            )
        )
        bind.execute(stmt, rows)


def defer_messages(bind: Bind, message_ids: Sequence[uuid.UUID], seconds: float | None) -> None:
    """Its tenant's send rate holds these messages back: free their lease, and with `seconds`
    let the dispatcher publish their delivery again then (claim_deferred_messages); without,
    the caller has published it again itself."""
    if not message_ids:
        return
    bind.execute(
        update(Message)
        .where(Message.id.in_(list(message_ids)), Message.status == MessageStatus.QUEUED.value)
        .values(
            deliver_after=None if seconds is None else seconds_from_now(seconds),
            delivery_lease_until=None,
            updated_at=db_now(),
        )
    )


def claim_deferred_messages(bind: Bind, *, batch_size: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Deferred messages whose time has come: clear the deferral, return (tenant, id), oldest
    first."""
    claim = (
        select(Message.id)
        .where(
            Message.status == MessageStatus.QUEUED.value,
            Message.deliver_after.is_not(None),
            Message.deliver_after <= db_now(),
        )
        .order_by(Message.deliver_after)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Message)
        .where(Message.id.in_(claim.scalar_subquery()))
        .values(deliver_after=None, updated_at=db_now())
        .returning(Message.tenant_id, Message.id)
    )
    return [(row[0], row[1]) for row in bind.execute(stmt)]


def claim_stale_messages(
    bind: Bind, *, batch_size: int, grace_seconds: float
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """QUEUED messages whose delivery task seems lost (untouched for the grace period, not
    leased, not deferred): touch them and return (tenant, id). Call only while the queues are
    quiet, like the re-publication of late steps."""
    claim = (
        select(Message.id)
        .where(
            Message.status == MessageStatus.QUEUED.value,
            Message.updated_at <= seconds_from_now(-grace_seconds),
            Message.deliver_after.is_(None),
            _lease_free(),
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
