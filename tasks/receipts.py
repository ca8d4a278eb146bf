"""Delivery receipts (journeys.delivery_receipt): move a message's status forward by the
provider's report, never back; keep a receipt that came before its message (db/receipts.py)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from celery import shared_task

from db import inbound as inbound_db
from db import receipts as receipts_db
from db.engine import autocommit_connection
from db.receipts import ReceiptResult
from db.statuses import MessageStatus
from tasks import names
from tasks.arguments import check_kwargs, optional_time_arg, string_arg, uuid_arg
from tasks.base import JourneyTask
from tasks.errors import BadMessage, UnknownEntity

log = logging.getLogger("journey_worker.receipts")

RECEIPT_STATUSES = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
}
MAX_PROVIDER_MESSAGE_ID = 255
MAX_ERROR_CODE = 64


@shared_task(bind=True, base=JourneyTask, name=names.DELIVERY_RECEIPT)
def delivery_receipt(self: JourneyTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    check_kwargs(names.DELIVERY_RECEIPT, args, kwargs)
    tenant_id = uuid_arg(kwargs, "tenant_id")
    provider_message_id = string_arg(kwargs, "provider_message_id", MAX_PROVIDER_MESSAGE_ID)
    raw_status = string_arg(kwargs, "status", 32)
    status = RECEIPT_STATUSES.get(raw_status.strip().lower())
    if status is None:
        raise BadMessage(f"status must be one of {', '.join(RECEIPT_STATUSES)}, got {raw_status!r}")
    error_code = None
    if kwargs.get("error_code") is not None:
        error_code = string_arg(kwargs, "error_code", MAX_ERROR_CODE)
    occurred_at = optional_time_arg(kwargs, "occurred_at")
    result = handle_receipt(tenant_id, provider_message_id, status, error_code, occurred_at)
    log.info(
        "delivery receipt tenant_id=%s provider_message_id=%s status=%s outcome=%s "
        "message_id=%s message_status=%s",
        tenant_id,
        provider_message_id[:64],
        status,
        result.outcome,
        result.message_id,
        result.status,
    )
    return {
        "outcome": result.outcome,
        "message_id": str(result.message_id) if result.message_id else None,
        "status": result.status,
    }


def handle_receipt(
    tenant_id: uuid.UUID,
    provider_message_id: str,
    status: MessageStatus,
    error_code: str | None,
    occurred_at: datetime | None,
) -> ReceiptResult:
    """applied | unchanged | kept (early: its message has no such provider id yet)."""
    with autocommit_connection() as connection:
        if inbound_db.tenant_settings(connection, tenant_id) is None:
            raise UnknownEntity("tenant", tenant_id)
        result = receipts_db.apply_receipt(
            connection, tenant_id, provider_message_id, status, error_code
        )
        if result.outcome != "not_found":
            return result
        receipts_db.keep_early_receipt(
            connection, tenant_id, provider_message_id, status, error_code, occurred_at
        )
        # The message may have got its id since the first look: try again now that the
        # receipt is stored (db/receipts.py says why nothing slips between the two).
        result = receipts_db.apply_receipt(
            connection, tenant_id, provider_message_id, status, error_code
        )
        if result.outcome == "not_found":
            return ReceiptResult("kept")
        receipts_db.forget_early_receipt(connection, tenant_id, provider_message_id)
        return result
