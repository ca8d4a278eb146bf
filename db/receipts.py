"""Delivery receipts in SQL: a message's status moves forward only, and a receipt that came
before its message's provider id was visible waits in early_delivery_receipts.

Forward only: each status has a rank (QUEUED 0, SENT 1, DELIVERED | UNDELIVERED | FAILED 2)
and the UPDATE's condition lists the statuses of lower rank, so PostgreSQL re-checks it against
a row another receipt changed meanwhile: a terminal state never moves back, and a receipt
applied twice changes nothing the second time.

An early receipt is never lost. The receipt stores it (committed) and then tries its message
again; the delivery stores the provider id (committed) and then applies what is stored. Each
second step starts after its own first step committed, so whichever of the two firsts
committed last, the other side's second step sees it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, case, delete, func, select, update
from sqlalchemy.orm import Session

from db.clock import db_now
from db.dialects import dialect_insert
from db.models import EarlyDeliveryReceipt, Message
from db.statuses import MESSAGE_STATUS_RANK, MessageDirection, MessageStatus

Bind = Session | Connection


@dataclass(frozen=True)
class ReceiptResult:
    # applied: the status moved | unchanged: the message is there, already as far or further
    # | not_found: no message has that provider id (yet)
    outcome: str
    message_id: uuid.UUID | None = None
    status: str | None = None


def _lower_ranked(status: MessageStatus) -> list[str]:
    rank = MESSAGE_STATUS_RANK[status]
    return [s.value for s, r in MESSAGE_STATUS_RANK.items() if r < rank]


def _rank_sql(column: object) -> object:
    return case(
        {s.value: r for s, r in MESSAGE_STATUS_RANK.items()},
        value=column,
        else_=-1,
    )


def apply_receipt(
    bind: Bind,
    tenant_id: uuid.UUID,
    provider_message_id: str,
    status: MessageStatus,
    error_code: str | None,
) -> ReceiptResult:
    """Move the tenant's outbound message with this provider id to `status` if that is
    forward; record the error code."""
    terminal_failure = status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED)
    moved = bind.execute(
        update(Message)
        .where(
            Message.tenant_id == tenant_id,
            Message.provider_message_id == provider_message_id,
            Message.direction == MessageDirection.OUTBOUND.value,
            Message.status.in_(_lower_ranked(status)),
        )
        .values(
            status=status.value,
            error_code=func.coalesce(error_code, Message.error_code),
            error=(
                func.coalesce(Message.error, f"receipt: {status.value.lower()}")
                if terminal_failure
                else Message.error
            ),
            delivery_lease_until=None,
            updated_at=db_now(),
        )
        .returning(Message.id)
    ).scalar()
    if moved is not None:
        return ReceiptResult("applied", moved, status.value)
    row = bind.execute(
        select(Message.id, Message.status).where(
            Message.tenant_id == tenant_id,
            Message.provider_message_id == provider_message_id,
            Message.direction == MessageDirection.OUTBOUND.value,
        )
    ).first()
    if row is None:
        return ReceiptResult("not_found")
    return ReceiptResult("unchanged", row.id, row.status)


def keep_early_receipt(
    bind: Bind,
    tenant_id: uuid.UUID,
    provider_message_id: str,
    status: MessageStatus,
    error_code: str | None,
    occurred_at: datetime | None,
) -> None:
    """Store a receipt whose message is not visible yet; of several, the furthest status."""
    insert = dialect_insert(bind)(EarlyDeliveryReceipt).values(
        tenant_id=tenant_id,
        provider_message_id=provider_message_id,
        status=status.value,
        error_code=error_code,
        occurred_at=occurred_at,
    )
    bind.execute(
        insert.on_conflict_do_update(
            index_elements=["tenant_id", "provider_message_id"],
            set_={
                "status": insert.excluded.status,
                "error_code": func.coalesce(
                    insert.excluded.error_code, EarlyDeliveryReceipt.error_code
                ),
                "occurred_at": insert.excluded.occurred_at,
            },
            where=_rank_sql(insert.excluded.status) > _rank_sql(EarlyDeliveryReceipt.status),
        )
    )


def forget_early_receipt(bind: Bind, tenant_id: uuid.UUID, provider_message_id: str) -> None:
    bind.execute(
        delete(EarlyDeliveryReceipt).where(
            EarlyDeliveryReceipt.tenant_id == tenant_id,
            EarlyDeliveryReceipt.provider_message_id == provider_message_id,
        )
    )


def apply_early_receipts(
    bind: Bind, tenant_id: uuid.UUID, message_ids: Sequence[uuid.UUID]
) -> list[ReceiptResult]:
    """The delivery has just stored these messages' provider ids: apply the receipts that
    were waiting for them, then delete those receipts."""
    if not message_ids:
        return []
    early = bind.execute(
        select(
            EarlyDeliveryReceipt.provider_message_id,
            EarlyDeliveryReceipt.status,
            EarlyDeliveryReceipt.error_code,
        )
        .join(
            Message,
            and_(
                Message.tenant_id == EarlyDeliveryReceipt.tenant_id,
                Message.provider_message_id == EarlyDeliveryReceipt.provider_message_id,
            ),
        )
        .where(Message.id.in_(list(message_ids)), Message.tenant_id == tenant_id)
    ).all()
    results = []
    for row in early:
        results.append(
            apply_receipt(
                bind, tenant_id, row.provider_message_id, MessageStatus(row.status), row.error_code
            )
        )
        # Only the receipt just applied: a further one stored meanwhile applies itself.
        bind.execute(
            delete(EarlyDeliveryReceipt).where(
                EarlyDeliveryReceipt.tenant_id == tenant_id,
                EarlyDeliveryReceipt.provider_message_id == row.provider_message_id,
                EarlyDeliveryReceipt.status == row.status,
            )
        )
    return results
