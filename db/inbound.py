"""Inbound SMS in SQL: the message, its contacts, opt-outs and opt-ins with their audit trail,
and the queued sends an opt-out stops.

The caller runs these in ONE transaction (tasks/inbound.py): the inbound message's row, its
unique (tenant_id, provider_message_id), is what makes a redelivered inbound message a no-op,
so the opt-out, the audit rows and the cancelled sends commit with it or not at all.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from db.clock import db_now
from db.dialects import dialect_insert, is_postgresql
from db.lookups import tenant_row
from db.models import Contact, ContactConsentChange, JourneyNodeExecution, Message
from db.statuses import ConsentAction, MessageDirection, MessageStatus

Bind = Session | Connection

# The reason a message was not sent, on the message and on its execution's result.
OPTED_OUT = "opted_out"


@dataclass(frozen=True)
class RecordedInbound:
    message_id: uuid.UUID
    created: bool  # False: this provider message was recorded before (a redelivery)


def tenant_settings(bind: Bind, tenant_id: uuid.UUID) -> dict[str, Any] | None:
    """The tenant's settings, None if there is no such tenant (read from the database, not the
    cache: an opt-out keyword added a moment ago must already count)."""
    row = tenant_row(bind, tenant_id)
    return None if row is None else dict(row.settings or {})


def contacts_with_phone(bind: Bind, tenant_id: uuid.UUID, phones: Sequence[str]) -> list[uuid.UUID]:
    """The tenant's contacts whose phone is one of `phones`, oldest first (index
    ix_contacts_tenant_phone)."""
    if not phones:
        return []
    rows = bind.execute(
        select(Contact.id)
        .where(Contact.tenant_id == tenant_id, Contact.phone.in_(sorted(set(phones))))
        .order_by(Contact.created_at, Contact.id)
    )
    return list(rows.scalars())


def record_inbound_message(
    bind: Bind,
    *,
    tenant_id: uuid.UUID,
    contact_id: uuid.UUID | None,
    from_phone: str,
    to_phone: str,
    body: str,
    provider_message_id: str,
) -> RecordedInbound:
    """Insert the INBOUND message once per (tenant, provider_message_id)."""
    message_id = uuid.uuid4()
    inserted = bind.execute(
        dialect_insert(bind)(Message)
        .values(
            id=message_id,
            tenant_id=tenant_id,
            contact_id=contact_id,
            direction=MessageDirection.INBOUND.value,
            body=body,
            status=MessageStatus.DELIVERED.value,
            provider_message_id=provider_message_id,
            from_phone=from_phone[:32],
            to_phone=to_phone[:32],
        )
        .on_conflict_do_nothing(
            index_elements=["tenant_id", "provider_message_id"],
            index_where=text("provider_message_id IS NOT NULL"),
        )
        .returning(Message.id)
    ).scalar()
    if inserted is not None:
        return RecordedInbound(inserted, True)
    existing = bind.execute(
        select(Message.id).where(
            Message.tenant_id == tenant_id, Message.provider_message_id == provider_message_id
        )
    ).scalar_one()
    return RecordedInbound(existing, False)


def change_consent(
    bind: Bind,
    tenant_id: uuid.UUID,
    contact_ids: Sequence[uuid.UUID],
    action: ConsentAction,
    message_id: uuid.UUID,
    keyword: str,
) -> list[uuid.UUID]:
    """Opt out (set opted_out_at where unset) or in (clear it where set); audit each contact
    that changed, with the message that said so; returns them."""
    changed = _set_opted_out(
        bind, tenant_id, contact_ids, opted_out=action == ConsentAction.OPT_OUT
    )
    _audit(bind, tenant_id, changed, action, message_id, keyword)
    return changed


def _set_opted_out(
    bind: Bind, tenant_id: uuid.UUID, contact_ids: Sequence[uuid.UUID], *, opted_out: bool
) -> list[uuid.UUID]:
    if not contact_ids:
        return []
    now_state = Contact.opted_out_at.is_(None) if opted_out else Contact.opted_out_at.is_not(None)
    rows = bind.execute(
        update(Contact)
        .where(Contact.id.in_(list(contact_ids)), Contact.tenant_id == tenant_id, now_state)
        .values(opted_out_at=db_now() if opted_out else None, updated_at=db_now())
        .returning(Contact.id)
    )
    return sorted(rows.scalars())


def _audit(
    bind: Bind,
    tenant_id: uuid.UUID,
    contact_ids: Sequence[uuid.UUID],
    action: ConsentAction,
    message_id: uuid.UUID,
    keyword: str,
) -> None:
    if not contact_ids:
        return
    bind.execute(
        insert(ContactConsentChange),
        [
            {
                "id": uuid.uuid4(),
                "tenant_id": tenant_id,
                "contact_id": contact_id,
                "action": action.value,
                "message_id": message_id,
                "keyword": keyword[:160],
            }
            for contact_id in contact_ids
        ],
    )


def contact_opted_out(bind: Bind, contact_id: uuid.UUID) -> bool:
    """Whether the contact is opted out now (a primary-key read, right before a send)."""
    return bool(
        bind.execute(
            select(Contact.id).where(
                Contact.id == contact_id,
                Contact.opted_out_at.is_not(None),
                Contact.opted_out_at <= db_now(),
            )
        ).first()
    )


def cancel_queued_for_contacts(
    bind: Bind, tenant_id: uuid.UUID, contact_ids: Sequence[uuid.UUID]
) -> list[uuid.UUID]:
    """The same for the contacts that just opted out (in the opt-out's transaction)."""
    if not contact_ids:
        return []
    return _fail_queued(bind, tenant_id, Message.contact_id.in_(list(contact_ids)))


def _fail_queued(bind: Bind, tenant_id: uuid.UUID, condition: Any) -> list[uuid.UUID]:
    where = [
        Message.tenant_id == tenant_id,
        Message.direction == MessageDirection.OUTBOUND.value,
        Message.status == MessageStatus.QUEUED.value,
        or_(Message.delivery_lease_until.is_(None), Message.delivery_lease_until < db_now()),
        condition,
    ]
    rows = bind.execute(
        update(Message)
        .where(and_(*where))
        .values(
            status=MessageStatus.FAILED.value,
            error=OPTED_OUT,
            deliver_after=None,
            updated_at=db_now(),
        )
        .returning(Message.id, Message.journey_node_execution_id)
    ).all()
    note_not_sent(bind, tenant_id, [row[0] for row in rows], OPTED_OUT)
    return sorted(row[0] for row in rows)


def note_not_sent(
    bind: Bind, tenant_id: uuid.UUID, message_ids: Sequence[uuid.UUID], reason: str
) -> None:
    """Say on each message's execution that its SMS was not sent, and why: support looks at
    the journey contact's executions, not at the messages table."""
    if not message_ids:
        return
    executions = (
        select(Message.journey_node_execution_id)
        .where(Message.id.in_(list(message_ids)), Message.tenant_id == tenant_id)
        .scalar_subquery()
    )
    note = json.dumps({"message_status": MessageStatus.FAILED.value, "not_sent": reason})
    result: Any
    if is_postgresql(bind):
        result = text("result || CAST(:note AS jsonb)").bindparams(note=note)
    else:
        result = func.json_patch(JourneyNodeExecution.result, note)
    bind.execute(
        update(JourneyNodeExecution)
        .where(JourneyNodeExecution.id.in_(executions), JourneyNodeExecution.tenant_id == tenant_id)
        .values(result=result, updated_at=db_now())
    )
