"""Dead letters: messages that can never succeed, kept where an operator will see them, and
what they leave behind (a failed contact, a failed message)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, or_, update
from sqlalchemy.orm import Session

from db.clock import db_now
from db.models import JourneyContact, Message, TaskFailure
from db.statuses import OPEN_CONTACT_STATUSES, ContactStatus, MessageStatus

JC = JourneyContact


def record_task_failure(
    session: Session,
    *,
    task_name: str,
    task_id: str | None,
    tenant_id: str | None,
    journey_contact_id: str | None,
    kwargs: dict[str, Any],
    error: str,
) -> None:
    session.execute(
        insert(TaskFailure).values(
            id=uuid.uuid4(),
            task_name=task_name,
            task_id=task_id,
            tenant_id=tenant_id,
            journey_contact_id=journey_contact_id,
            kwargs=kwargs,
            error=error,
        )
    )


def fail_open_steps(
    session: Session,
    tenant_id: uuid.UUID,
    steps: Sequence[tuple[uuid.UUID, int | None]],
    reason: str,
) -> int:
    """FAILED with the reason, for the journey contacts still on their journey and still at the
    given step (None: whatever step), so a failure never overwrites a step that moved on."""
    if not steps:
        return 0
    at_step = [
        (JC.id == journey_contact_id)
        if step is None
        else ((JC.id == journey_contact_id) & (JC.step_seq == step))
        for journey_contact_id, step in steps
    ]
    result = session.execute(
        update(JC)
        .where(
            or_(*at_step),
            JC.tenant_id == tenant_id,
            JC.status.in_([s.value for s in OPEN_CONTACT_STATUSES]),
        )
        .values(
            status=ContactStatus.FAILED.value,
            status_reason=reason,
            due_at=None,
            completed_at=db_now(),
            updated_at=db_now(),
        )
    )
    return result.rowcount or 0


def fail_queued_messages(
    session: Session, tenant_id: uuid.UUID, message_ids: Sequence[uuid.UUID], reason: str
) -> int:
    if not message_ids:
        return 0
    result = session.execute(
        update(Message)
        .where(
            Message.id.in_(list(message_ids)),
            Message.tenant_id == tenant_id,
            Message.status == MessageStatus.QUEUED.value,
        )
        .values(status=MessageStatus.FAILED.value, error=reason, updated_at=db_now())
    )
    return result.rowcount or 0
